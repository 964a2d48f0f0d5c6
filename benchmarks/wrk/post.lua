-- A small JSON scoring call (~160 bytes), the same bytes on every request and every row. It is valid
-- against config/schemas/infer_request.json; run.py reads the body from the wrk.body line below for its
-- probes and checks it against that schema, so keep the body a single-quoted string on one line.
-- No x-user-id header on purpose: without a sticky key rollguard splits at random per request,
-- which is what the anchors do, so every row does the same routing work.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = '{"features":{"amount":12.5,"tenure_months":7,"txn_24h":2,"region":"br-se"},"user_id":"u-000001","context":{"channel":"mobile","sent_at":"2026-01-01T00:00:00Z"}}'
