"""A/B testing: experiment configuration, deterministic assignment, the event log in Redis,
the statistics (user-level CIs, always-valid intervals, sample-ratio check), the report
(JSON, a self-contained HTML page, PNG figures) and the simulator that replays users
against a running API.

Other packages import from here, never from the modules below.
"""

from service.ab.assignment import BUCKETS, arm_ranges, assign, bucket
from service.ab.eventlog import (
    ACCEPTED,
    ALREADY_COUNTED,
    CONFLICT,
    DUPLICATE_EVENT,
    NOT_COUNTED,
    ABStore,
    ArmCounts,
    Exposure,
    Recorded,
)
from service.ab.experiments import Arm, Experiment, ExperimentConfigError, load_experiments
from service.ab.files import write_report
from service.ab.page import render_html
from service.ab.report import build_report
from service.ab.runs import run_config, run_id
from service.ab.sequential import SequentialLift, sequential_lift
from service.ab.simulate import (
    ClickModel,
    Plant,
    SimulationError,
    format_report,
    parse_plant,
    parse_segments,
    pick_users,
    read_truth,
    simulate,
)
from service.ab.srm import SampleRatio, sample_ratio_check
from service.ab.stats import ArmStats, Lift, arm_stats, ctr_by_position, lift

__all__ = [
    "ACCEPTED",
    "ALREADY_COUNTED",
    "BUCKETS",
    "CONFLICT",
    "DUPLICATE_EVENT",
    "NOT_COUNTED",
    "ABStore",
    "Arm",
    "ArmCounts",
    "ArmStats",
    "ClickModel",
    "Experiment",
    "ExperimentConfigError",
    "Exposure",
    "Lift",
    "Plant",
    "Recorded",
    "SampleRatio",
    "SequentialLift",
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
    "parse_plant",
    "parse_segments",
    "pick_users",
    "read_truth",
    "render_html",
    "run_config",
    "run_id",
    "sample_ratio_check",
    "sequential_lift",
    "simulate",
    "write_report",
]
