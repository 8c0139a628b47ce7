-- Events table: one row per record. notification_id is the record's place
-- in the global log, assigned by the appending transaction from the
-- table's row in the counters table (see DESIGN.md); it is the clustered
-- primary key, so reading the log is a range scan in id order.
CREATE TABLE IF NOT EXISTS {{.Table}} (
    notification_id BIGINT NOT NULL,
    {{.StreamID}} BINARY(16) NOT NULL,
    {{.Position}} BIGINT NOT NULL,
    {{.Topic}} VARCHAR(1024) NOT NULL,
    {{.Data}} LONGBLOB NOT NULL,
    PRIMARY KEY (notification_id),
    UNIQUE KEY {{.StreamKey}} ({{.StreamID}}, {{.Position}})
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per events table: the highest notification id handed out. An
-- appending transaction increments it first and keeps its row lock until
-- COMMIT, which serialises appends to the table.
CREATE TABLE IF NOT EXISTS {{.Counters}} (
    table_name VARCHAR(64) NOT NULL PRIMARY KEY,
    last_id BIGINT NOT NULL
) ENGINE=InnoDB;

INSERT IGNORE INTO {{.Counters}} (table_name, last_id)
SELECT {{.TableLiteral}}, COALESCE(MAX(notification_id), 0) FROM {{.Table}};
