"""
Where a node's log goes: Twisted's text format, or JSON lines, at a level.

A JSON line is one object per event, with no record separator (unlike
L{twisted.logger.jsonFileLogObserver}, whose C{\\x1e} prefix and nested
level objects suit C{eventsFromJSONLogFile} more than C{jq} or a log
shipper)::

    {"time": "2026-11-30T00:41:02.113+00:00", "level": "info",
     "namespace": "srp.server.node.NodeService", "message": "srp node ...",
     "fields": {"node": 3054..., "port": 1434}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)

#: The log formats C{srp serve --log-format} knows.
FORMATS: Sequence[str] = ("text", "json")
#: The levels C{srp serve --log-level} knows, least severe first.
LEVELS: Sequence[str] = tuple(level.name for level in LogLevel.iterconstants())


def eventFields(event: LogEvent) -> dict[str, Any]:
    """An event as the object of its JSON line."""
    line: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC)
        .isoformat(timespec="milliseconds"),
        "level": event["log_level"].name if "log_level" in event else None,
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
        "fields": {key: value for key, value in event.items()
                   if not key.startswith("log_") and isinstance(key, str)},
    }
    failure = event.get("log_failure")
    if failure is not None:
        line["traceback"] = failure.getTraceback()
    return line


def formatJSONLine(event: LogEvent) -> str:
    """One event as a line of JSON; a field JSON cannot hold is written as its C{repr}."""
    return json.dumps(eventFields(event), default=repr, ensure_ascii=False) + "\n"


def nodeObserver(out: IO[str], format: str = "text", level: str = "info") -> ILogObserver:
    """
    An observer writing to C{out} in C{format} (C{text} or C{json}) the
    events of C{level} (C{debug}, C{info}, C{warn}, C{error}, C{critical})
    and above.

    @raise ValueError: for an unknown format or level.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown log format {format!r}; use one of {', '.join(FORMATS)}")
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    observer = (FileLogObserver(out, formatJSONLine) if format == "json"
                else textFileLogObserver(out))
    return FilteringLogObserver(
        observer, [LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))])
