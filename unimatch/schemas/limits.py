"""Every bound of the contract, once.

Request models, the WebSocket frame models, the OpenAPI document and the
handlers read these names; a limit changes here and nowhere else.
"""

from __future__ import annotations

# -- bodies and frames ------------------------------------------------------------

# A JSON request body, checked from Content-Length before it is read and by a
# bounded read when it is chunked.
JSON_BODY_MAX_BYTES = 64 * 1024
# A WebSocket text frame.
WS_FRAME_MAX_BYTES = 16 * 1024

# -- numbers in paths, queries, bodies and frames -----------------------------

# A message's `seq` (and a cursor, a receipt's `seq`). PostgreSQL keeps it as
# bigint; the contract bounds it to what every client language holds exactly.
SEQ_MIN = 0
SEQ_MAX = 2**31 - 1

# -- accounts ---------------------------------------------------------------------

EMAIL_MAX = 254
PASSWORD_MAX = 1024
TOKEN_MAX = 4096
OTP_DIGITS = 6

# -- profiles ---------------------------------------------------------------------

DISPLAY_NAME_MIN = 1
DISPLAY_NAME_MAX = 50
BIO_MAX = 500
INTERESTS_MIN = 3
INTERESTS_MAX = 10
YEAR_OF_STUDY_MIN = 1
YEAR_OF_STUDY_MAX = 7
MIN_AGE = 18
MAX_AGE = 120

# -- chat -------------------------------------------------------------------------

CHAT_BODY_MAX = 2000
CLIENT_MSG_ID_MAX = 100
SYNC_CURSORS_MAX = 500

# -- notifications, webhooks, moderation --------------------------------------

NOTIFICATION_IDS_MAX = 500
WEBHOOK_URL_MAX = 2000
SUSPENSION_REASON_MAX = 500
REPORT_DETAILS_MAX = 2000

# -- pages: (default, maximum) of each `limit` query ----------------------------

MESSAGES_PAGE = (50, 200)
DISCOVER_PAGE = (20, 50)
NOTIFICATIONS_PAGE = (50, 100)
REPORTS_PAGE = (50, 100)
DELIVERIES_PAGE = (20, 100)
