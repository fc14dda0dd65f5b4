-- Bytes per external address (each pool's addresses): what leaves from, and returns to,
-- each public address natgw translates to.
SELECT
    "natgw.nat.source.address"                               AS external_address,
    "natgw.nat.pool"                                         AS pool,
    count(DISTINCT ("network.transport", "source.port", "natgw.flow.created")) AS flows,
    sum("natgw.flow.bytes.out")                              AS bytes_out,
    sum("natgw.flow.bytes.in")                               AS bytes_in
FROM flow_log
WHERE "natgw.flow.action" = 'ACCEPT'
GROUP BY external_address, pool
ORDER BY bytes_out DESC, external_address;
