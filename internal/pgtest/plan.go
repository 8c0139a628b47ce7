package pgtest

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

var paramRE = regexp.MustCompile(`\$([0-9]+)`)

// GenericPlan returns the plan PostgreSQL caches for sql once a prepared
// statement switches to its generic plan (the plan every execution uses
// from then on), as EXPLAIN prints it. Parameters must carry casts
// ($1::uuid) or be otherwise typed by the statement; the plan is made
// for NULL arguments, which a generic plan does not look at.
func GenericPlan(ctx context.Context, conn *pgx.Conn, sql string) (string, error) {
	n := 0
	for _, m := range paramRE.FindAllStringSubmatch(sql, -1) {
		i, _ := strconv.Atoi(m[1])
		n = max(n, i)
	}
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		return "", fmt.Errorf("pgtest: generic plan: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `RESET plan_cache_mode; DEALLOCATE ALL`)
	if _, err := conn.Exec(ctx, `PREPARE pgtest_plan AS `+sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		return "", fmt.Errorf("pgtest: prepare: %w", err)
	}
	nulls := strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
	rows, err := conn.Query(ctx, `EXPLAIN EXECUTE pgtest_plan(`+nulls+`)`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return "", fmt.Errorf("pgtest: explain: %w", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("pgtest: explain: %w", err)
	}
	return strings.Join(lines, "\n"), nil
}

// RequireIndexLookups fails t unless the generic plan of each statement
// (see GenericPlan) reads table only through index: no sequential scan of
// it and no hashed subplan, which PostgreSQL may choose for a table it
// believes small and then keep for every execution as it grows.
func RequireIndexLookups(t testing.TB, ctx context.Context, conn *pgx.Conn, table, index string, statements map[string]string) {
	t.Helper()
	for name, sql := range statements {
		plan, err := GenericPlan(ctx, conn, sql)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Contains(plan, "Seq Scan on "+table) || strings.Contains(plan, "hashed") ||
			!strings.Contains(plan, "using "+index+" on "+table) {
			t.Errorf("%s: %s is not read through %s only:\n%s", name, table, index, plan)
		}
	}
}
