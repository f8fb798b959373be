"""The admin is the product's dashboard: profiles, live and past calls, transcripts, analysis.

One module per page family: ``profile.py`` (agent profiles, overlays), ``tools.py`` (HTTP
tools), ``call.py`` (the call list and a call's review page), ``review.py`` (how a call's
turns and figures read), ``overview.py`` (figures across calls), ``global_stop.py``.
"""

from calls.admin.call import EXPORT_CSV_COLUMNS, CallAdmin, csv_cell
from calls.admin.global_stop import GlobalStopEventAdmin
from calls.admin.profile import AgentProfileAdmin
from calls.admin.tools import ProfileToolAdmin

__all__ = [
    "EXPORT_CSV_COLUMNS",
    "AgentProfileAdmin",
    "CallAdmin",
    "GlobalStopEventAdmin",
    "ProfileToolAdmin",
    "csv_cell",
]
