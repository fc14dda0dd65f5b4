-- The guide's Athena query ("VPC Flow Logs 분석"): the most frequent
-- (source, destination, ports, action) combinations. A long flow writes several records
-- (one per active_interval_s); connection_count counts flows, not records.
SELECT
    "source.address"      AS sourceaddress,
    "destination.address" AS destinationaddress,
    "source.port"         AS sourceport,
    "destination.port"    AS destinationport,
    "natgw.flow.action"   AS action,
    count(DISTINCT ("network.transport", "natgw.flow.created")) AS connection_count
FROM flow_log
GROUP BY sourceaddress, destinationaddress, sourceport, destinationport, action
ORDER BY connection_count DESC, sourceaddress, destinationaddress, sourceport, destinationport, action
LIMIT 10;
