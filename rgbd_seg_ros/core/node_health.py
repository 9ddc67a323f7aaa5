"""How healthy the segmentation node is: one pure function of a metrics snapshot and limits.

A robot's monitor reads the level of /diagnostics, not its figures, so the level has to say
what is true: ERROR when an input has gone silent (a wrong topic name, a dead driver), WARN
when an input is too slow, when the inputs stop pairing, when frames are skipped or when the
outputs fall behind the paired input (a stall in decoding or in the model), OK otherwise.
These are the rules diagnostic_updater's frequency status applies to one stream (no event in
the window: ERROR; too slow: WARN), applied to every stream of the pipeline; every finding
above OK is kept and the messages are joined with '; ', the way its merged summaries read.

Free of ROS and of clocks: ``assess`` gets the moment it judges, so every rule is tested with
made-up times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum


class Level(IntEnum):
    """The levels of diagnostic_msgs/DiagnosticStatus (OK 0, WARN 1, ERROR 2)."""

    OK = 0
    WARN = 1
    ERROR = 2


#: What the messages call each input stream (the metrics call them rgb, depth, info).
INPUT_NAMES: dict[str, str] = {'rgb': 'colour', 'depth': 'depth', 'info': 'camera_info'}


@dataclass(frozen=True)
class HealthLimits:
    """The thresholds of the rules (node parameters ``health.*``); 0 turns a rate rule off."""

    stale_after_s: float = 3.0  # an input silent this long: ERROR
    min_input_hz: float = 5.0  # an input slower than this: WARN
    min_pairing_ratio: float = 0.5  # pairs per second / slowest input's rate below this: WARN
    min_output_ratio: float = 0.5  # segmented frames per second / pairs per second: WARN


@dataclass(frozen=True)
class StreamState:
    """One stream's events: first and last (monotonic seconds, None: never) and its rate."""

    first_s: float | None
    last_s: float | None
    rate_hz: float


NEVER = StreamState(None, None, 0.0)


@dataclass(frozen=True)
class HealthSnapshot:
    """What the rules look at, taken at ``now_s``."""

    now_s: float
    started_s: float  # when the node began waiting for input
    inputs: Mapping[str, StreamState]  # the inputs every frame needs, by metrics name
    paired: StreamState
    out: StreamState  # frames segmented and published
    new_skips: int  # frames refused since the previous report
    model_loaded: bool
    outputs_wanted: bool  # somebody subscribes to an output that is switched on
    # Inputs the loaded model can do without (depth for a model that runs on colour alone):
    # their silence degrades the outputs (no cloud) but stops nothing, so it only warns.
    optional_inputs: Mapping[str, StreamState] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str


@dataclass(frozen=True)
class Health:
    """The verdict: the worst level, its message and the figures the rules computed."""

    level: Level
    message: str
    findings: tuple[Finding, ...]
    values: dict[str, str]


def assess(snapshot: HealthSnapshot, limits: HealthLimits) -> Health:
    """The node's level and message; see the module docstring for the rules."""
    findings: list[Finding] = []
    values: dict[str, str] = {}
    now = snapshot.now_s
    fresh_rates: list[float] = []
    for stream, state in snapshot.inputs.items():
        name = INPUT_NAMES.get(stream, stream)
        silent = now - (state.last_s if state.last_s is not None else snapshot.started_s)
        values[f'silent_{stream}_s'] = f'{silent:.1f}'
        if silent > limits.stale_after_s:
            since = '' if state.last_s is not None else ' (none since start)'
            findings.append(Finding(Level.ERROR, f'no {name} for {silent:.1f} s{since}'))
            continue
        rate = _known_rate(state)
        if rate is not None:
            fresh_rates.append(rate)
        if limits.min_input_hz > 0 and (rate or 0.0) < limits.min_input_hz:
            findings.append(
                Finding(
                    Level.WARN,
                    f'{name} at {rate or 0.0:.1f} Hz, below {limits.min_input_hz:g} Hz',
                )
            )
    for stream, state in snapshot.optional_inputs.items():
        name = INPUT_NAMES.get(stream, stream)
        silent = now - (state.last_s if state.last_s is not None else snapshot.started_s)
        values[f'silent_{stream}_s'] = f'{silent:.1f}'
        if silent > limits.stale_after_s:
            findings.append(Finding(Level.WARN, f'no {name} for {silent:.1f} s, running without'))
    all_fresh = len(fresh_rates) == len(snapshot.inputs)
    if not snapshot.model_loaded:
        findings.append(Finding(Level.WARN, 'no model loaded'))
    paired_hz = None
    if all_fresh and fresh_rates:
        inputs_since = max(s.first_s for s in snapshot.inputs.values() if s.first_s is not None)
        paired_hz = _recent_rate(snapshot.paired, now, inputs_since, limits.stale_after_s)
        slowest = min(fresh_rates)
        if paired_hz is not None and slowest > 0:
            ratio = paired_hz / slowest
            values['pairing_ratio_recent'] = f'{ratio:.3f}'
            if ratio < limits.min_pairing_ratio:
                findings.append(
                    Finding(
                        Level.WARN,
                        f'pairing collapsed: {paired_hz:.1f} pairs/s from inputs at '
                        f'{slowest:.1f} Hz',
                    )
                )
    if snapshot.new_skips > 0:
        findings.append(Finding(Level.WARN, f'{snapshot.new_skips} bad frame(s) skipped'))
    if paired_hz and snapshot.model_loaded and snapshot.outputs_wanted:
        pairs_since = snapshot.paired.first_s if snapshot.paired.first_s is not None else now
        out_hz = _recent_rate(snapshot.out, now, pairs_since, limits.stale_after_s)
        if out_hz is not None:
            ratio = out_hz / paired_hz
            values['output_ratio_recent'] = f'{ratio:.3f}'
            if ratio < limits.min_output_ratio:
                findings.append(
                    Finding(
                        Level.WARN,
                        f'outputs at {out_hz:.1f} Hz for {paired_hz:.1f} pairs/s',
                    )
                )
    return _verdict(findings, values)


def _known_rate(state: StreamState) -> float | None:
    """The stream's rate, or None while one event alone does not give one."""
    return state.rate_hz if state.rate_hz > 0 else None


def _recent_rate(state: StreamState, now: float, since: float, stale_s: float) -> float | None:
    """The rate of a derived stream (pairs, outputs): 0 once it has been silent longer than
    ``stale_s`` (counted from ``since`` when it never happened), None while too early to say."""
    silent = now - (state.last_s if state.last_s is not None else since)
    if silent > stale_s:
        return 0.0
    return _known_rate(state)


def _verdict(findings: list[Finding], values: dict[str, str]) -> Health:
    level = max((f.level for f in findings), default=Level.OK)
    message = '; '.join(f.text for f in findings if f.level > Level.OK) or 'running'
    return Health(level, message, tuple(findings), values)
