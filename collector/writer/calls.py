"""Client/server call pairing: each CLIENT->SERVER pair between two services counted once."""

from collector.batch import KIND_CLIENT, KIND_SERVER, STATUS_ERROR
from collector.writer.items import Item, bytea_array, int4_array
from collector.writer.rows import _DAY_NS, _bounds, _ns


class _Calls:
    """The call pairing of a _Transaction (its `cur`, `rows`, `rollups`)."""

    async def _calls(self, new_spans: list[Item]) -> None:
        """Count each CLIENT->SERVER pair between two services once, when its second span lands.

        A new SERVER span is paired with its CLIENT parent wherever that is:
        in this group, or stored before. A new CLIENT span is paired only with
        SERVER children stored before and not in this group, so a pair that
        arrives together is counted from the server side alone. Pairs found
        inside the group cost no query, which is the common case when the
        writer coalesces the exports of both services.
        """
        servers, clients = [], []
        for item in new_spans:
            span = item.row
            kind = span.kind
            if kind == KIND_SERVER:
                if span.parent_span_id:
                    servers.append(span)
            elif kind == KIND_CLIENT:
                clients.append(span)
        if not servers and not clients:
            return
        in_group = {
            (span.project_id, span.trace_id, span.span_id): span
            for span in (
                clients
                if new_spans is self.rows.spans
                else [i.row for i in self.rows.spans if i.row.kind == KIND_CLIENT]
            )
        }
        # Clients whose server child is new here are counted from the server side.
        children = {(s.project_id, s.trace_id, s.parent_span_id) for s in servers}

        lookup = []
        for server in servers:
            client = in_group.get((server.project_id, server.trace_id, server.parent_span_id))
            if client is None:
                lookup.append(server)
            else:
                self._add_call(client, server.service, server.status_code)
        clients = [c for c in clients if (c.project_id, c.trace_id, c.span_id) not in children]
        lo, hi = _bounds([s.start_time_ns for s in lookup + clients] or [0], _DAY_NS)
        if lookup:
            await self.cur.execute(
                "SELECT k.i, c.service, c.start_time, c.duration_ns, c.status_code "
                "FROM unnest(%b::int[], %b::bytea[], %b::bytea[]) WITH ORDINALITY AS k(p, t, sp, i) "
                "JOIN collector_span c ON c.project_id = k.p AND c.trace_id = k.t "
                "AND c.span_id = k.sp AND c.kind = %s WHERE c.start_time BETWEEN %s AND %s",
                (
                    int4_array([s.project_id for s in lookup]),
                    bytea_array([s.trace_id for s in lookup]),
                    bytea_array([s.parent_span_id for s in lookup]),
                    KIND_CLIENT,
                    lo,
                    hi,
                ),
            )
            seen = set()
            for index, client, start, duration_ns, status in await self.cur.fetchall():
                if index in seen:
                    continue
                seen.add(index)
                server = lookup[index - 1]
                if client != server.service:
                    self.rollups.add_call(
                        server.project_id, client, server.service, _ns(start),
                        duration_ns / 1e6,
                        STATUS_ERROR in (status, server.status_code),
                    )  # fmt: skip
        if clients:
            new_keys = {(s.row.project_id, s.row.trace_id, s.row.span_id) for s in new_spans}
            await self.cur.execute(
                "SELECT k.i, s.trace_id, s.span_id, s.service, s.status_code "
                "FROM unnest(%b::int[], %b::bytea[], %b::bytea[]) WITH ORDINALITY AS k(p, t, sp, i) "
                "JOIN collector_span s ON s.project_id = k.p AND s.trace_id = k.t "
                "AND s.parent_span_id = k.sp AND s.kind = %s WHERE s.start_time BETWEEN %s AND %s",
                (
                    int4_array([s.project_id for s in clients]),
                    bytea_array([s.trace_id for s in clients]),
                    bytea_array([s.span_id for s in clients]),
                    KIND_SERVER,
                    lo,
                    hi,
                ),
            )
            for index, trace_id, span_id, server, status in await self.cur.fetchall():
                client = clients[index - 1]
                if (client.project_id, bytes(trace_id), bytes(span_id)) in new_keys:
                    continue  # a new server span: counted above
                self._add_call(client, server, status)

    def _add_call(self, client, server_service: str, server_status: int) -> None:
        if client.service != server_service:
            self.rollups.add_call(
                client.project_id, client.service, server_service, client.start_time_ns,
                client.duration_ns / 1e6,
                STATUS_ERROR in (client.status_code, server_status),
            )  # fmt: skip
