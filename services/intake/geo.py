"""Country of an IP address, offline, for Caddy's lines (Bunny's carry their own).

The data is the ``iptocc`` package's: the five Regional Internet Registries' delegation
files (the country each block is *assigned* to, which agrees with commercial GeoIP for
about 95% of IPv4), compiled into a Rust lookup table inside the wheel. No file is read
and nothing is fetched at run time. The package re-publishes with fresh registry data
(its version's last number counts data releases), so an operator refreshes countries
with ``pip install -U iptocc`` and a restart of the intake; ``geo_data_version()`` says
which release is loaded.

Why iptocc over the others on PyPI: MIT/Apache-2.0 code over public registry data (no
EULA, no attribution clause in the data), released far more often than geoip2fast
(GeoLite2 data, last release mid-2024) or ip-to-country (pickled tables, no licence
text), and ~100 ns a lookup with no cache needed; db-geoip is an online service.
"""

from __future__ import annotations

import ipaddress
from importlib.metadata import version

from iptocc import country_code

__all__ = ["CountryLookup", "geo_data_version"]

_MAX_ADDRESS = 64  # longer than any textual IPv6 address with a zone: junk


def geo_data_version() -> str:
    """The installed iptocc release, i.e. which registry snapshot answers."""
    return version("iptocc")


class CountryLookup:
    """ISO 3166-1 alpha-2 code of an address, or "" for private, unknown or junk input.

    Thread-safe: the table is immutable and the lookup keeps no state.
    """

    def country(self, ip: str) -> str:
        """The country ``ip`` is registered to; never raises."""
        if not isinstance(ip, str) or not ip or len(ip) > _MAX_ADDRESS:
            return ""
        code = country_code(ip)
        if code is None and (":" in ip or " " in ip):
            code = self._normalised(ip)
        return code if code and len(code) == 2 and code.isascii() and code.isupper() else ""

    @staticmethod
    def _normalised(ip: str) -> str | None:
        # The slow path, only for forms the table does not take as they are:
        # "[2001:db8::1]", "fe80::1%eth0", "::ffff:192.0.2.1" (a v4 client on a v6 socket).
        text = ip.strip().strip("[]").partition("%")[0]
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return None
        mapped = getattr(address, "ipv4_mapped", None)
        return country_code(str(mapped or address))
