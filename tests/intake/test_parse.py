import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.parse import (
    MAX_LINE,
    InvalidLine,
    LogLine,
    parse_bunny,
    parse_caddy,
    parse_line,
)


def format_bunny_json(line: LogLine) -> bytes:
    """A ``LogLine`` as one Bunny JSON record (what ``parse_bunny`` must read back)."""
    record = {
        "Timestamp": round(line.ts.timestamp() * 1000),
        "Host": line.host,
        "Method": line.method,
        "PathAndQuery": line.path,
        "Status": line.status,
        "BytesSent": line.bytes,
        "Referer": line.referrer,
        "UserAgent": line.user_agent,
        "Country": line.country,
        "RequestId": line.request_id,
        "HeaderRange": "bytes" if line.range_request else "",
        "RemoteIp": line.remote_ip,
    }
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


REAL_CADDY = (
    '{"level":"info","ts":1795845242.7551901,"logger":"http.log.access.log0",'
    '"msg":"handled request",'
    '"request":{"remote_ip":"127.0.0.1","remote_port":"41714","proto":"HTTP/1.1","method":"GET",'
    '"host":"a.localhost:8080","uri":"/","headers":{"User-Agent":["curl/7.88.1"],"Accept":["*/*"],'
    '"Referer":["http://x/"]}},"user_id":"","duration":0.002587097,"size":3,"status":200,'
    '"resp_headers":{"Server":["Caddy"]}}'
)


def caddy(**changes) -> str:
    obj = json.loads(REAL_CADDY)
    request = changes.pop("request", {})
    obj["request"].update(request)
    obj.update(changes)
    return json.dumps(obj)


BUNNY_RECORD = {
    "ServerId": 123,
    "IsValid": True,
    "PullZoneId": 456,
    "IsSSL": True,
    "Host": "site.b-cdn.net",
    "Protocol": "HTTP/2",
    "Scheme": "https",
    "UserAgent": "curl/8.0",
    "RequestId": "322b688bd63fb63f2babe9de30a5d262",
    "HeaderRange": "",
    "Country": "DE",
    "PathAndQuery": "/index.html?a=}",
    "ServerZone": "DE",
    "Status": 200,
    "BytesSent": 412,
    "BodyBytesSent": 390,
    "Timestamp": 1507167062421,
    "GzipRatio": 0,
    "Cached": True,
    "RemoteIp": "163.172.53.0",
    "Referer": "",
}
BUNNY_JSON = json.dumps(BUNNY_RECORD)
PIPE = (
    "HIT|200|1507167062421|412|390|163.172.53.229|-|https://bunnycdn.b-cdn.net/assets/x.m4v?q=}|WA|"
    "Mozilla/5.0 (Windows NT 10.0) |odd| UA|322b688bd63fb63f2babe9de30a5d262|DE"
)
SYSLOG = (
    "<165>1 2021-01-01T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    '[exampleSDID@32473 iut="3" eventSource="Bunny CDN" note="a \\] b"][second x="y"] '
)
BOM = "\ufeff"
T_BUNNY = datetime(2017, 10, 5, 1, 31, 2, 421000, tzinfo=UTC)


# -- Caddy ------------------------------------------------------------------------

CADDY_OK = [
    pytest.param(
        REAL_CADDY,
        dict(
            host="a.localhost",
            method="GET",
            path="/",
            status=200,
            bytes=3,
            referrer="http://x/",
            user_agent="curl/7.88.1",
            remote_ip="127.0.0.1",
            source="caddy",
        ),
        id="real-line-host-with-port",
    ),
    pytest.param(
        caddy(request={"headers": {}}),
        dict(referrer="", user_agent="", range_request=False),
        id="missing-headers",
    ),
    pytest.param(
        caddy(request={"headers": None, "host": "Blog.Example.COM."}),
        dict(host="blog.example.com", user_agent=""),
        id="null-headers-mixed-case-host",
    ),
    pytest.param(
        caddy(request={"host": "[::1]:8080", "uri": "/a?b=c", "method": "head"}),
        dict(host="::1", path="/a?b=c", method="HEAD"),
        id="ipv6-host-query-kept",
    ),
    pytest.param(
        caddy(
            request={
                "client_ip": "203.0.113.9",
                "headers": {"user-agent": "x", "Range": ["bytes=0-1"]},
            }
        ),
        dict(remote_ip="203.0.113.9", user_agent="x", range_request=True),
        id="client-ip-preferred-lenient-headers",
    ),
    pytest.param(
        caddy(size=None, status=404.0), dict(bytes=0, status=404), id="null-size-float-status"
    ),
]


@pytest.mark.parametrize("line, expected", CADDY_OK)
def test_caddy_lines(line, expected):
    for data in (line, line.encode()):
        parsed = parse_caddy(data)
        for name, value in expected.items():
            assert getattr(parsed, name) == value, name
        assert parsed.ts.tzinfo is UTC


def test_caddy_timestamp_is_utc_seconds():
    assert parse_caddy(REAL_CADDY).ts == datetime.fromtimestamp(1795845242.7551901, UTC)


CADDY_BAD = [
    ("not json", "not_json"),
    ("[1,2]", "not_object"),
    (b"\xff\xfe{}", "bad_encoding"),
    (caddy(logger="http.handlers.reverse_proxy"), "not_access_log"),
    ('{"ts": 1795845242, "status": 200}', "missing_field"),
    (caddy(request={"host": 5}), "bad_type"),
    (caddy(request={"host": ""}), "missing_field"),
    (caddy(status="200"), "bad_type"),
    (caddy(status=True), "bad_type"),
    (caddy(status=99), "bad_value"),
    (caddy(ts=-5), "bad_value"),
    (caddy(size=-1), "bad_value"),
    (caddy(request={"headers": ["x"]}), "bad_type"),
    (caddy(request={"headers": {"User-Agent": [5]}}), "bad_type"),
    ("{" * 100_000, "too_long"),
    ("[" * 10_000, "not_json"),
]


@pytest.mark.parametrize("line, reason", CADDY_BAD)
def test_caddy_rejects(line, reason):
    with pytest.raises(InvalidLine) as caught:
        parse_caddy(line)
    assert caught.value.reason == reason


# -- Bunny --------------------------------------------------------------------------

EXPECTED_JSON = dict(
    ts=T_BUNNY,
    host="site.b-cdn.net",
    method="GET",
    path="/index.html?a=}",
    status=200,
    bytes=412,
    referrer="",
    user_agent="curl/8.0",
    remote_ip="163.172.53.0",
    country="DE",
    request_id="322b688bd63fb63f2babe9de30a5d262",
    source="bunny",
    range_request=False,
)
EXPECTED_PIPE = dict(
    ts=T_BUNNY,
    host="bunnycdn.b-cdn.net",
    path="/assets/x.m4v?q=}",
    status=200,
    bytes=412,
    referrer="",
    user_agent="Mozilla/5.0 (Windows NT 10.0) |odd| UA",
    remote_ip="163.172.53.229",
    country="DE",
    request_id="322b688bd63fb63f2babe9de30a5d262",
    source="bunny",
)

BUNNY_OK = [
    pytest.param(BUNNY_JSON, EXPECTED_JSON, id="json-bare"),
    pytest.param(SYSLOG + BUNNY_JSON, EXPECTED_JSON, id="json-in-syslog-with-sd"),
    pytest.param(SYSLOG + BOM + BUNNY_JSON, EXPECTED_JSON, id="json-in-syslog-with-bom"),
    pytest.param(
        "<14>1 - - - - - - " + BUNNY_JSON + "\r\n", EXPECTED_JSON, id="json-in-syslog-nil-sd"
    ),
    pytest.param(BOM + BUNNY_JSON, EXPECTED_JSON, id="json-bare-bom"),
    pytest.param(PIPE, EXPECTED_PIPE, id="pipe-with-pipes-in-ua"),
    pytest.param(SYSLOG + BOM + PIPE, EXPECTED_PIPE, id="pipe-in-syslog-with-bom"),
    pytest.param(
        json.dumps(
            {**BUNNY_RECORD, "Referer": "-", "HeaderRange": "bytes=0-", "Country": "xx1", "New": 1}
        ),
        dict(referrer="", range_request=True, country=""),
        id="json-lenient-extras",
    ),
    pytest.param(
        PIPE.replace("|-|", "|https://www.google.com/|").replace("|DE", "|"),
        dict(referrer="https://www.google.com/", country=""),
        id="pipe-referrer-no-country",
    ),
]


@pytest.mark.parametrize("line, expected", BUNNY_OK)
def test_bunny_records(line, expected):
    for data in (line, line.encode()):
        parsed = parse_bunny(data)
        for name, value in expected.items():
            assert getattr(parsed, name) == value, name


BUNNY_BAD = [
    (
        '<165>1 2021-01-01T22:14:15.003Z host app - ID47 [unterminated x="1" ' + BUNNY_JSON,
        "bad_syslog",
    ),
    ("<165>1 2021 host app - ID47 nosd " + BUNNY_JSON, "bad_syslog"),
    ("<999>1 2021 host app - ID47 - " + BUNNY_JSON, "bad_syslog"),
    ("<165>2021-01-01 host: " + BUNNY_JSON, "bad_syslog"),
    ("<165>1 2021 host app - ID47 -", "empty"),
    ("   ", "empty"),
    ("HIT|200|1507167062421", "missing_field"),
    (PIPE.replace("|200|", "|abc|"), "bad_type"),
    (PIPE.replace("https://bunnycdn.b-cdn.net", "nonsense"), "bad_value"),
    (json.dumps({**BUNNY_RECORD, "Timestamp": "soon"}), "bad_type"),
    (json.dumps({k: v for k, v in BUNNY_RECORD.items() if k != "Host"}), "missing_field"),
    (json.dumps({**BUNNY_RECORD, "Status": 700}), "bad_value"),
    ("{oops", "not_json"),
]


@pytest.mark.parametrize("line, reason", BUNNY_BAD)
def test_bunny_rejects(line, reason):
    with pytest.raises(InvalidLine) as caught:
        parse_bunny(line)
    assert caught.value.reason == reason


def test_parse_line_dispatches_and_rejects_unknown_source():
    assert parse_line(REAL_CADDY, "caddy").source == "caddy"
    assert parse_line(PIPE, "bunny").source == "bunny"
    with pytest.raises(InvalidLine, match="unknown_source"):
        parse_line(PIPE, "nginx")


def test_ip_never_in_repr():
    assert "127.0.0.1" not in repr(parse_caddy(REAL_CADDY))


def test_length_cap():
    padded = caddy(msg="x" * (MAX_LINE - len(REAL_CADDY)))
    assert len(padded) > MAX_LINE
    with pytest.raises(InvalidLine, match="too_long"):
        parse_caddy(padded)


# -- properties ------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_only_ever_raise_invalid_line(data):
    for parse in (parse_caddy, parse_bunny):
        for candidate in (data, b"<165>1 - - - - - - " + data, b"{" + data, data + b"|" * 12):
            try:
                assert isinstance(parse(candidate), LogLine)
            except InvalidLine as exc:
                assert exc.reason.isidentifier()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_only_ever_raises_invalid_line(value):
    shapes = [
        value,
        {"request": value, "ts": value, "status": value},
        {**BUNNY_RECORD, "Timestamp": value},
        {**BUNNY_RECORD, "Host": value},
        {**json.loads(REAL_CADDY), "size": value},
    ]
    for shape in shapes:
        for parse in (parse_caddy, parse_bunny):
            try:
                parse(json.dumps(shape))
            except InvalidLine:
                pass


hosts = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
paths = st.from_regex(
    r"/[A-Za-z0-9._~%!$&'()*+,;=:@/}{-]{0,40}(\?[A-Za-z0-9=&}{.-]{0,20})?", fullmatch=True
)
safe_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)
times_ms = st.integers(min_value=946_684_800_000, max_value=4_102_444_799_000)


@given(
    hosts,
    st.integers(0, 65535),
    paths,
    st.integers(100, 599),
    st.integers(0, 2**40),
    safe_text,
    safe_text,
    st.floats(946_684_800, 4_102_444_799, allow_nan=False),
    st.sampled_from(["GET", "POST", "HEAD"]),
)
def test_caddy_round_trip(host, port, path, status, size, user_agent, referrer, ts, method):
    line = json.dumps(
        {
            "level": "info",
            "ts": ts,
            "logger": "http.log.access.log0",
            "msg": "handled request",
            "request": {
                "remote_ip": "192.0.2.1",
                "method": method,
                "host": f"{host}:{port}",
                "uri": path,
                "headers": {"User-Agent": [user_agent], "Referer": [referrer]},
            },
            "size": size,
            "status": status,
        }
    )
    parsed = parse_caddy(line.encode())
    assert (parsed.host, parsed.path, parsed.status, parsed.bytes, parsed.method) == (
        host,
        path,
        status,
        size,
        method,
    )
    assert (parsed.user_agent, parsed.referrer, parsed.remote_ip) == (
        user_agent,
        referrer,
        "192.0.2.1",
    )
    assert parsed.ts == datetime.fromtimestamp(ts, UTC)


bunny_lines = st.builds(
    LogLine,
    ts=times_ms.map(lambda ms: datetime.fromtimestamp(ms / 1000, UTC)),
    host=hosts,
    method=st.just("GET"),
    path=paths,
    status=st.integers(100, 599),
    bytes=st.integers(0, 2**40),
    referrer=safe_text.filter(lambda s: s.strip() not in ("", "-")) | st.just(""),
    user_agent=safe_text,
    remote_ip=st.sampled_from(["163.172.53.0", "2001:7d0:700d:db04::", "0.0.0.0"]),
    country=st.sampled_from(["DE", "US", ""]),
    request_id=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    source=st.just("bunny"),
    range_request=st.booleans(),
)


@given(bunny_lines)
def test_bunny_json_round_trip(line):
    record = format_bunny_json(line)
    assert record.endswith(b"\n") and record.count(b"\n") == 1
    assert parse_bunny(record) == line
    assert parse_bunny(b"<165>1 2021-01-01T00:00:00Z h a - - - \xef\xbb\xbf" + record) == line
    assert parse_bunny(SYSLOG.encode() + record) == line


@given(bunny_lines.filter(lambda line: "|" not in line.referrer and not line.range_request))
def test_bunny_pipe_round_trip(line):
    ms = round(line.ts.timestamp() * 1000)
    pipe = "|".join(
        [
            "MISS",
            str(line.status),
            str(ms),
            str(line.bytes),
            "7",
            line.remote_ip,
            line.referrer or "-",
            f"https://{line.host}{line.path}",
            "WA",
            line.user_agent,
            line.request_id,
            line.country,
        ]
    )
    parsed = parse_bunny(pipe)
    assert parsed == line


def test_lone_surrogates_are_refused_not_stored():
    bunny = json.dumps({**BUNNY_RECORD, "PathAndQuery": "/x\ud800"})
    caddy_line = caddy(request={"uri": "/\udfff"})
    for parse, line in ((parse_bunny, bunny), (parse_caddy, caddy_line)):
        with pytest.raises(InvalidLine) as caught:
            parse(line.encode())
        assert caught.value.reason == "bad_encoding"


def test_huge_numbers_in_pipe_lines_are_invalid_not_a_crash():
    line = "HIT|200|" + "9" * 5000 + "|412|390|1.2.3.0|-|https://a.b/x|WA|curl/8|rid|DE"
    with pytest.raises(InvalidLine) as caught:
        parse_bunny(line.encode())
    assert caught.value.reason == "bad_value"
