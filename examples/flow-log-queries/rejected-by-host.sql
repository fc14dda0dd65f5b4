-- Rejected flows by inside host: who tries to reach what the egress policy refuses.
-- Refused flows are logged when flow_log.refused = true (one record per tuple and
-- interval; repeats are counted in natgw.flow.packets).
SELECT
    "source.address"                         AS inside_host,
    count(*)                                 AS rejected_flows,
    count(DISTINCT "destination.address")    AS destinations,
    sum("natgw.flow.packets")                AS packets,
    string_agg(DISTINCT CAST("destination.port" AS VARCHAR), ',' ORDER BY CAST("destination.port" AS VARCHAR)) AS ports
FROM flow_log
WHERE "natgw.flow.action" = 'REJECT'
GROUP BY inside_host
ORDER BY rejected_flows DESC, inside_host;
