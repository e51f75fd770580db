"""The HorizontalPodAutoscaler's arithmetic on the metric the rule feeds, at the chart's target.

For an External metric with an AverageValue target the controller computes
usage = metric / (target x current replicas); within its tolerance (0.1) it keeps the count,
else desired = ceil(current x usage) = ceil(metric / target), clamped to min and max replicas
(kubernetes/pkg/controller/podautoscaler/replica_calculator.go, GetExternalPerPodMetricReplicas).
The figures are those promtool computes from tests/rules-test.yaml (1500 requests/s over two
replicas) and others around the thresholds.

    python deploy/tests/test_hpa.py
"""
import math
import os
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
VALUES = yaml.safe_load(open(os.path.join(HERE, "..", "helm", "edgecut", "values.yaml")))
TOLERANCE = 0.1


def desired(current, metric, target, lo, hi):
    usage = metric / (target * current)
    if abs(usage - 1.0) <= TOLERANCE:
        n = current
    else:
        n = math.ceil(current * usage)
    return max(lo, min(hi, n))


class HpaArithmetic(unittest.TestCase):
    def setUp(self):
        a = VALUES["autoscaling"]
        self.target = a["targetRequestsPerSecond"]
        self.lo, self.hi = a["minReplicas"], a["maxReplicas"]

    def d(self, current, metric):
        return desired(current, metric, self.target, self.lo, self.hi)

    def test_the_seed_target(self):
        self.assertEqual(self.target, 1000)
        self.assertEqual(VALUES["service"]["name"], "llm-inference")

    def test_scales_up_to_ceil_of_rate_over_target(self):
        self.assertEqual(self.d(2, 3500), 4)  # 1750 per replica
        self.assertEqual(self.d(4, 6001), 7)
        self.assertEqual(self.d(3, 4000), 4)

    def test_within_tolerance_keeps_the_count(self):
        self.assertEqual(self.d(2, 2150), 2)  # usage 1.075
        self.assertEqual(self.d(4, 3700), 4)  # usage 0.925
        self.assertEqual(self.d(2, 2300), 3)  # usage 1.15

    def test_scales_down_and_clamps(self):
        self.assertEqual(self.d(6, 3000), 3)
        self.assertEqual(self.d(2, 1500), 2)  # the promtool figure: ceil(1.5) = 2
        self.assertEqual(self.d(2, 100), self.lo)
        self.assertEqual(self.d(8, 25_000), self.hi)


if __name__ == "__main__":
    unittest.main()
