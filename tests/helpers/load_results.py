"""Result files as k6 and Locust write them, of one run (6,000 requests, 0.7% failed), for the tests that
read them."""

from __future__ import annotations

from typing import Any

# What `k6 run --summary-export summary.json` writes (k6 v0.49, default summaryTrendStats): figures at the
# metric's top level; a threshold is `true` when it was crossed.
K6_SUMMARY_EXPORT: dict[str, Any] = {
    "root_group": {
        "name": "",
        "path": "",
        "id": "d41d8cd98f00b204e9800998ecf8427e",
        "groups": {},
        "checks": {},
    },
    "metrics": {
        "http_req_duration": {
            "avg": 21.48,
            "min": 3.112,
            "med": 18.902,
            "max": 311.4,
            "p(90)": 35.77,
            "p(95)": 48.215,
            "thresholds": {"p(95)<120": False},
        },
        "http_req_duration{expected_response:true}": {
            "avg": 21.1,
            "min": 3.112,
            "med": 18.8,
            "max": 140.2,
            "p(90)": 35.1,
            "p(95)": 47.9,
        },
        "http_reqs": {"count": 6000, "rate": 99.87},
        "http_req_failed": {"passes": 42, "fails": 5958, "value": 0.007, "thresholds": {"rate<0.005": True}},
        "iterations": {"count": 6000, "rate": 99.87},
        "vus": {"value": 3, "min": 0, "max": 12},
        "vus_max": {"value": 50, "min": 50, "max": 50},
        "data_received": {"count": 1320000, "rate": 21971.4},
        "data_sent": {"count": 1870000, "rate": 31125.8},
        "checks": {"passes": 5958, "fails": 42, "value": 0.993},
    },
}

# The same run as handleSummary() sees it (and `JSON.stringify(data)` writes), with p(99) exported.
K6_HANDLE_SUMMARY: dict[str, Any] = {
    "root_group": {
        "name": "",
        "path": "",
        "id": "d41d8cd98f00b204e9800998ecf8427e",
        "groups": [],
        "checks": [],
    },
    "options": {"summaryTrendStats": ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"]},
    "state": {"isStdOutTTY": False, "isStdErrTTY": False, "testRunDurationMs": 60078.5},
    "metrics": {
        "http_req_duration": {
            "type": "trend",
            "contains": "time",
            "values": {
                "avg": 21.48,
                "min": 3.112,
                "med": 18.902,
                "max": 311.4,
                "p(90)": 35.77,
                "p(95)": 48.215,
                "p(99)": 140.5,
            },
            "thresholds": {"p(95)<120": {"ok": True}, "p(99)<100": {"ok": False}},
        },
        "http_reqs": {"type": "counter", "contains": "default", "values": {"count": 6000, "rate": 99.87}},
        "http_req_failed": {
            "type": "rate",
            "contains": "default",
            "values": {"rate": 0.007, "passes": 42, "fails": 5958},
        },
        "iterations": {"type": "counter", "contains": "default", "values": {"count": 6000, "rate": 99.87}},
        "vus_max": {"type": "gauge", "contains": "default", "values": {"value": 50, "min": 50, "max": 50}},
        "data_received": {"type": "counter", "contains": "data", "values": {"count": 1320000, "rate": 21971}},
    },
}

LOCUST_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%"
)
# What `locust --headless --csv run` writes to run_stats.csv (Locust 2.x): one row per name and method,
# then the Aggregated row. Locust rounds times above 100 ms to two significant digits.
LOCUST_STATS = "\n".join(
    [
        LOCUST_HEADER,
        "POST,/v1/infer,5400,27,19,21.37,3.05,412.9,71.0,90.02,0.45,19,23,26,28,36,48,88,140,300,410,410",
        "GET,/healthz,600,0,2,2.41,0.88,15.3,2.0,10.0,0.0,2,2,3,3,4,5,8,11,15,15,15",
        "POST,/v1/explain,0,0,0,0.0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A",
        ",Aggregated,6000,27,18,19.47,0.88,412.9,64.1,100.02,0.45,18,22,25,27,35,47,86,130,290,410,410",
        "",
    ]
)
