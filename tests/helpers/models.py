"""The pair of sample model servers (v1 baseline, v2 candidate) that the ``models`` fixture starts."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.demo.sample_model import RunningModel


@dataclass
class Models:
    baseline: RunningModel
    candidate: RunningModel
