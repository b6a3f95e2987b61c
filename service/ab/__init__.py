"""A/B testing: experiment configuration, deterministic assignment, the event log in Redis,
the statistics and report, and the simulator that replays users against a running API.

Other packages import from here, never from the modules below.
"""

from service.ab.assignment import BUCKETS, arm_ranges, assign, bucket
from service.ab.eventlog import (
    ACCEPTED,
    ALREADY_COUNTED,
    CONFLICT,
    DUPLICATE_EVENT,
    ABStore,
    ArmCounts,
    Exposure,
    Recorded,
)
from service.ab.experiments import Arm, Experiment, ExperimentConfigError, load_experiments
from service.ab.report import build_report, render_html
from service.ab.runs import run_config, run_id
from service.ab.simulate import (
    ClickModel,
    SimulationError,
    format_report,
    pick_users,
    read_truth,
    simulate,
)
from service.ab.stats import ArmStats, Lift, arm_stats, ctr_by_position, lift

__all__ = [
    "ACCEPTED",
    "ALREADY_COUNTED",
    "BUCKETS",
    "CONFLICT",
    "DUPLICATE_EVENT",
    "ABStore",
    "Arm",
    "ArmCounts",
    "ArmStats",
    "ClickModel",
    "Experiment",
    "ExperimentConfigError",
    "Exposure",
    "Lift",
    "Recorded",
    "SimulationError",
    "arm_ranges",
    "arm_stats",
    "assign",
    "bucket",
    "build_report",
    "ctr_by_position",
    "format_report",
    "lift",
    "load_experiments",
    "pick_users",
    "read_truth",
    "render_html",
    "run_config",
    "run_id",
    "simulate",
]
