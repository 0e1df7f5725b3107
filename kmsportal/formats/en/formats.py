"""The portal's one date and time format (ISO 8601, UTC), for `{{ value }}` and `|date`
without an explicit format. Templates use `|utc` (portal.template_filters) explicitly."""

DATETIME_FORMAT = r"Y-m-d\TH:i:s\Z"
SHORT_DATETIME_FORMAT = r"Y-m-d\TH:i:s\Z"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
