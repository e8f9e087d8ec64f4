"""intake room: access logs in, ClickHouse rows out.

Flow (``service.build(ctx)`` wires it)::

    Caddy access.log ──────────────────────────► follow ─┐
    Bunny syslog TCP ─► syslog (frames, parse,            ├─► pipeline (parse, hosts,
                        dedupe) ─► spool file ─► follow ─┘    enrich) ─► sink ─► requests
                                                               offsets saved after insert

Modules: parse/syslog5424/frames (pure decoding), hosts (site lookup), agents/salts/
enrich (row building), pipeline (one line's fate), follow/offsets/spool (files,
at-least-once), sink (batched inserts), syslog (TCP listener), service (the loop).
"""
