"""A/B testing: experiments, assignment, the event log, statistics, the report, the simulator."""
