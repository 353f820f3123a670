"""kastat3's `-x/--date-min` and `-y/--date-max`: dates read as Kadeploy3's OptionParser reads a `Time`.

CLI room; imports only the standard library. bin/kastat3 declares both with the
`Time` class (`add_opt(opt, "-x", "--date-min TIME", Time, ...)`), so Ruby's
optparse/time converts the argument with `Time.httpdate(s) rescue Time.parse(s)`
and refuses what neither reads (`invalid argument: -x 1700000000`); the client
then sends `time.httpdate` (GMT). Kadeploy3's help names one form,
`yyyy-mm-dd hh:mm:ss`.

What is read here, each exactly as Ruby reads it (tests compare with the
installed Ruby):

- the three HTTP date forms of `Time.httpdate` (RFC 1123, RFC 850, asctime),
  in GMT;
- `yyyy-mm-dd` or `yyyy/mm/dd`, optionally followed (after `T` or blanks) by
  `hh[:mm[:ss[.fraction]]]` and a zone (`Z`, `UTC`, `GMT`, `+hh`, `+hhmm`,
  `+hh:mm`); `yyyymmdd[Thhmmss]`; a time alone (`hh:mm[:ss]`) is today's;
- without a zone, the client's local time (`Time.local`), whose overflow Ruby
  carries (February 30 is March 1, `24:00` and second 60 roll over), and a
  local time that a DST change skips or repeats is the later instant.

`Time.parse` also guesses at free text (`Aug 18`, `1 hour ago`, `18/08/2016`,
two-digit years, trailing words): those are refused here naming the value,
rather than guessed differently from Ruby.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import date, datetime, timedelta, timezone

_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_WEEKDAYS_LONG = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(" + "|".join(_MONTHS) + ")"

# Time.httpdate's three forms (Ruby's time.rb), GMT only
_RFC1123 = re.compile(rf"\A\s*{_WEEKDAYS},\x20(\d{{2}})\x20{_MONTH}\x20(\d{{4}})\x20(\d{{2}}):(\d{{2}}):(\d{{2}})\x20GMT\s*\Z",
                      re.IGNORECASE)
_RFC850 = re.compile(rf"\A\s*{_WEEKDAYS_LONG},\x20(\d\d)-{_MONTH}-(\d\d)\x20(\d\d):(\d\d):(\d\d)\x20GMT\s*\Z",
                     re.IGNORECASE)
_ASCTIME = re.compile(rf"\A\s*{_WEEKDAYS}\x20{_MONTH}\x20(\d\d|\x20\d)\x20(\d\d):(\d\d):(\d\d)\x20(\d{{4}})\s*\Z",
                      re.IGNORECASE)

_ZONE = r"(?:\s*(?P<zone>Z|UTC|GMT|[-+]\d\d(?::?\d\d)?))?"
_CLOCK = r"(?P<hour>\d{1,2})(?::(?P<minute>\d{1,2})(?::(?P<second>\d{1,2})(?:\.\d+)?)?)?"
_DATED = re.compile(rf"\A\s*(?P<year>\d{{4}})(?P<sep>[-/])(?P<month>\d{{1,2}})(?P=sep)(?P<day>\d{{1,2}})"
                    rf"(?:(?:T|\s+){_CLOCK}{_ZONE})?\s*\Z", re.IGNORECASE)
_COMPACT = re.compile(rf"\A\s*(?P<year>\d{{4}})(?P<month>\d\d)(?P<day>\d\d)"
                      rf"(?:T?(?P<hour>\d\d)(?P<minute>\d\d)(?P<second>\d\d))?{_ZONE}\s*\Z", re.IGNORECASE)
_CLOCK_ONLY = re.compile(rf"\A\s*(?P<hour>\d{{1,2}}):(?P<minute>\d{{1,2}})(?::(?P<second>\d{{1,2}}))?{_ZONE}\s*\Z",
                         re.IGNORECASE)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """The instant Ruby's `Time.httpdate(text) rescue Time.parse(text)` gives (aware, UTC); ValueError if refused."""
    moment = _httpdate(text)
    if moment is not None:
        return moment
    for pattern in (_DATED, _COMPACT, _CLOCK_ONLY):
        match = pattern.match(text)
        if match is not None:
            return _from_fields(match.groupdict(), now or datetime.now())
    raise ValueError(text)


def http_date(text: str) -> str:
    """The Acceptor of `-x`/`-y`: the date as the client sends it (`Time#httpdate`), ValueError if refused."""
    moment = parse_time(text)
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


def _httpdate(text: str) -> datetime | None:
    if match := _RFC1123.match(text):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.match(text):
        day, month, short_year, hour, minute, second = match.groups()
        year = str(int(short_year) + (1900 if int(short_year) >= 50 else 2000))
    elif match := _ASCTIME.match(text):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    try:
        return datetime(int(year), _MONTHS[month.capitalize()], int(day), int(hour), int(minute), int(second),
                        tzinfo=timezone.utc)
    except ValueError:  # Time.httpdate refuses what Time.utc cannot build; Time.parse then reads it
        return None


def _from_fields(fields: dict[str, str | None], now: datetime) -> datetime:
    """Date._parse's fields to Time: checked ranges, then Time.local/Time.utc with Ruby's carry."""
    today = now.date()
    year = int(fields.get("year") or today.year)
    month = int(fields.get("month") or today.month)
    day = int(fields.get("day") or today.day)
    hour, minute, second = (int(fields.get(key) or 0) for key in ("hour", "minute", "second"))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 24 and minute <= 59 and second <= 60):
        raise ValueError("out of range")
    if hour == 24 and (minute or second):  # Time.local takes 24:00:00 only
        raise ValueError("out of range")
    # Ruby's Time carries an overflowing day, hour 24 and second 60 into the next unit
    base = date(year, month, 1) + timedelta(days=day - 1)
    if base.month != month and day <= _days_in(year, month):
        raise ValueError("out of range")
    wall = datetime(base.year, base.month, base.day) + timedelta(hours=hour, minutes=minute, seconds=second)
    zone = fields.get("zone")
    if zone:
        return (wall - _offset(zone)).replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(_local_timestamp(wall), timezone.utc)


def _days_in(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _offset(zone: str) -> timedelta:
    if zone.upper() in ("Z", "UTC", "GMT"):
        return timedelta(0)
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))


def _local_timestamp(wall: datetime) -> float:
    """Time.local: a wall time a DST change repeats (both readings give it back) or skips (neither does)
    is the later of its two readings; any other has one reading, the one that gives it back."""
    fields = wall.timetuple()[:8]
    readings = sorted({time.mktime((*fields, dst)) for dst in (0, 1)})
    faithful = [reading for reading in readings if datetime.fromtimestamp(reading) == wall]
    return faithful[0] if len(faithful) == 1 else readings[-1]
