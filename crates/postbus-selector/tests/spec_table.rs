//! The specification as a table: several hundred selectors with the truth
//! value JMS 2.0 section 3.8.1.1 (and the crate's documented choices) give
//! on one fixture message. Every row is also checked after negation normal
//! form and after a print/re-parse round trip, so the three agree.

mod common;

use common::{fixture, sel};
use postbus_selector::Selector;

/// `T` TRUE, `F` FALSE, `U` UNKNOWN.
fn expect(code: char) -> Option<bool> {
    match code {
        'T' => Some(true),
        'F' => Some(false),
        'U' => None,
        _ => panic!("bad code {code}"),
    }
}

const ROWS: &[(&str, char)] = &[
    // --- arithmetic and Java numeric promotion
    ("i7 / 2 = 3", 'T'),
    ("l7 / 2 = 3", 'T'),
    ("d7 / 2 = 3.5", 'T'),
    ("f7 / 2 = 3.5", 'T'),
    ("i7 / 2 = 3.5", 'F'),
    ("in7 / 2 = -3", 'T'),
    ("in7 / 2 = -4", 'F'),
    ("7 / 2 = 3", 'T'),
    ("7.0 / 2 = 3.5", 'T'),
    ("7 / 2.0 = 3.5", 'T'),
    ("i7 / i0 = 0", 'U'),
    ("NOT (i7 / i0 = 0)", 'U'),
    ("i7 / 0 > 0", 'U'),
    ("d7 / 0 > 1e308", 'T'),
    ("d7 / 0 = inf", 'T'),
    ("-d7 / 0 < 0", 'T'),
    ("(0.0 / 0.0) = (0.0 / 0.0)", 'F'),
    ("(0.0 / 0.0) <> 1", 'T'),
    ("imax + 1 > 0", 'T'),
    ("imax + imax > 0", 'U'),
    ("imax * i3 > 0", 'U'),
    ("lmax + 1 > 0", 'U'),
    ("lmin - 1 < 0", 'U'),
    ("lmax * 2 > 0", 'U'),
    ("-lmin > 0", 'U'),
    ("lmin / -1 = 1", 'U'),
    ("-imin > 0", 'U'),
    ("imin / -1 > 0", 'T'),
    ("1 + 2 * 3 = 7", 'T'),
    ("(1 + 2) * 3 = 9", 'T'),
    ("10 - 2 - 3 = 5", 'T'),
    ("24 / 4 / 2 = 3", 'T'),
    ("2 * -i3 = -6", 'T'),
    ("- -i3 = 3", 'T'),
    ("+i3 = 3", 'T'),
    ("-i3 = -3", 'T'),
    ("+str = 'abc'", 'U'),
    ("-str = 1", 'U'),
    ("str + 1 = 1", 'U'),
    ("t + 1 = 2", 'U'),
    ("missing + 1 = 1", 'U'),
    ("i3 * 1.5 = 4.5", 'T'),
    ("i3 * 1.5F = 4.5", 'T'),
    ("l3 + f3 = 6", 'T'),
    ("b3 + s3 = 6", 'T'),
    ("b3 * 100 = 300", 'T'),
    ("i3 - -1 = 4", 'T'),
    ("i3--1 = 4", 'T'),
    ("- i3 * 2 = -6", 'T'),
    ("i3 + 1 = i4", 'T'),
    ("(i3 + i4) * 2 = 14", 'T'),
    ("d3 - 0.5 = 2.5", 'T'),
    // --- float vs double
    ("f01 = 0.1", 'F'),
    ("f01 = 0.1F", 'T'),
    ("f01 > 0.1", 'T'),
    ("f01 <> 0.1", 'T'),
    ("d01 = 0.1", 'T'),
    ("d01 = 0.1F", 'F'),
    ("d01 < 0.1F", 'T'),
    ("f01 = d01", 'F'),
    ("f01 > d01", 'T'),
    ("f3 = 3.0", 'T'),
    ("f3 = d3", 'T'),
    // --- longs beyond 2^53 and ints beyond 2^24
    ("big1 = 9007199254740992", 'F'),
    ("big1 = 9007199254740993", 'T'),
    ("big1 > big2", 'T'),
    ("big1 = big2", 'F'),
    ("big1 <> big2", 'T'),
    ("big1 - big2 = 1", 'T'),
    ("big1 = 9007199254740992.0", 'T'),
    ("big1 = 9007199254740993.0", 'T'),
    ("big1 > 9007199254740992.0", 'F'),
    ("big2 = 9007199254740992.0", 'T'),
    ("i16m = 16777216F", 'T'),
    ("i16m > 16777216F", 'F'),
    ("i16m = 16777216", 'F'),
    ("i16m = 16777217", 'T'),
    ("lmax = 9223372036854775807", 'T'),
    ("lmin = -9223372036854775808", 'T'),
    ("lmax = 9.223372036854775807E18", 'T'),
    ("lmax > 9223372036854775806", 'T'),
    // --- NaN and infinity
    ("nan = nan", 'F'),
    ("nan <> nan", 'T'),
    ("nan < 1", 'F'),
    ("nan > 1", 'F'),
    ("nan >= 1", 'F'),
    ("nan <= 1", 'F'),
    ("NOT (nan < 1)", 'T'),
    ("fnan = fnan", 'F'),
    ("fnan <> 1", 'T'),
    ("nan BETWEEN 0 AND 1", 'F'),
    ("nan NOT BETWEEN 0 AND 1", 'F'),
    ("NOT (nan BETWEEN 0 AND 1)", 'T'),
    ("inf > 1e308", 'T'),
    ("inf = inf", 'T'),
    ("-inf < 0", 'T'),
    ("nan IS NULL", 'F'),
    // --- unlike types: FALSE for = and <> alike, never an error
    ("five = 5", 'F'),
    ("five <> 5", 'F'),
    ("NOT (five = 5)", 'T'),
    ("NOT (five <> 5)", 'T'),
    ("five < 6", 'F'),
    ("five >= 6", 'F'),
    ("NOT (five < 6)", 'T'),
    ("three = i3", 'F'),
    ("three <> i3", 'F'),
    ("t = 1", 'F'),
    ("t <> 1", 'F'),
    ("tru = TRUE", 'F'),
    ("t = 'true'", 'F'),
    ("str = t", 'F'),
    ("five BETWEEN 1 AND 10", 'F'),
    ("five NOT BETWEEN 1 AND 10", 'F'),
    ("NOT (five BETWEEN 1 AND 10)", 'T'),
    ("'5' = 5", 'F'),
    ("TRUE = 1", 'F'),
    // --- strings and booleans: = and <> only
    ("t = TRUE", 'T'),
    ("t <> FALSE", 'T'),
    ("f = FALSE", 'T'),
    ("t = f", 'F'),
    ("t <> f", 'T'),
    ("str = 'abc'", 'T'),
    ("str <> 'abc'", 'F'),
    ("str = 'ABC'", 'F'),
    ("str <> 'x'", 'T'),
    ("str = three", 'F'),
    ("str < three", 'U'),
    ("NOT (str < three)", 'U'),
    ("str >= str", 'U'),
    ("t < f", 'U'),
    ("quote = 'it''s'", 'T'),
    ("str = 'ab''c'", 'F'),
    ("empty = ''", 'T'),
    ("nl = 'line1\nline2'", 'T'),
    ("city = 'Zürich ✓'", 'T'),
    // --- identifiers as conditions
    ("t", 'T'),
    ("f", 'F'),
    ("str", 'U'),
    ("i3", 'U'),
    ("missing", 'U'),
    ("NOT str", 'U'),
    ("NOT f", 'T'),
    ("t AND i3 = 3", 'T'),
    ("(t)", 'T'),
    // --- BETWEEN
    ("i3 BETWEEN 1 AND 5", 'T'),
    ("i3 BETWEEN 3 AND 3", 'T'),
    ("i3 BETWEEN 4 AND 5", 'F'),
    ("i3 NOT BETWEEN 4 AND 5", 'T'),
    ("i3 NOT BETWEEN 1 AND 5", 'F'),
    ("d3 BETWEEN 2.5 AND 3.5", 'T'),
    ("f3 BETWEEN 3 AND 3.0", 'T'),
    ("i3 BETWEEN 5 AND 1", 'F'),
    ("i3 NOT BETWEEN 5 AND 1", 'T'),
    ("missing BETWEEN 1 AND 5", 'U'),
    ("missing NOT BETWEEN 1 AND 5", 'U'),
    ("NOT (missing BETWEEN 1 AND 5)", 'U'),
    ("i3 BETWEEN missing AND 5", 'U'),
    ("i3 BETWEEN missing AND 2", 'F'),
    ("i3 BETWEEN 1 AND missing", 'U'),
    ("i3 NOT BETWEEN missing AND 2", 'T'),
    ("i3 NOT BETWEEN missing AND 5", 'U'),
    ("i3 NOT BETWEEN 4 AND missing", 'T'),
    ("i3 + 1 BETWEEN i4 AND i4", 'T'),
    ("JMSPriority BETWEEN 0 AND 9", 'T'),
    ("big1 BETWEEN big2 AND big2", 'F'),
    ("-i3 BETWEEN -4 AND -2", 'T'),
    ("i3 between 1 and 5", 'T'),
    ("i3 BETWEEN 1 AND 5 AND t", 'T'),
    ("i3 BETWEEN 1 AND 5 AND f", 'F'),
    ("f OR i3 BETWEEN 1 AND 2 OR t", 'T'),
    ("NOT i3 BETWEEN 1 AND 2", 'T'),
    ("i3 BETWEEN 1 + 1 AND 2 * 2", 'T'),
    // --- IN
    ("cur IN ('EUR','USD')", 'T'),
    ("cur IN ('USD')", 'F'),
    ("cur NOT IN ('USD','GBP')", 'T'),
    ("cur NOT IN ('EUR')", 'F'),
    ("missing IN ('EUR')", 'U'),
    ("missing NOT IN ('EUR')", 'U'),
    ("NOT (missing IN ('EUR'))", 'U'),
    ("NOT (cur IN ('EUR'))", 'F'),
    ("i3 IN ('3')", 'U'),
    ("i3 NOT IN ('3')", 'U'),
    ("t IN ('true')", 'U'),
    ("cur IN ('eur')", 'F'),
    ("quote IN ('it''s')", 'T'),
    ("empty IN ('')", 'T'),
    ("city IN ('Zürich ✓')", 'T'),
    ("JMSType IN ('trade.v1', 'x')", 'T'),
    ("JMSCorrelationID IN ('a')", 'U'),
    ("JMSCorrelationID NOT IN ('a')", 'U'),
    ("cur in ('EUR')", 'T'),
    ("(cur) IN ('EUR')", 'T'),
    // --- LIKE
    ("region LIKE 'EU-%'", 'T'),
    ("region LIKE 'eu-%'", 'F'),
    ("region LIKE 'EU-____'", 'T'),
    ("region LIKE 'EU-___'", 'F'),
    ("region LIKE '%west'", 'T'),
    ("region LIKE '%'", 'T'),
    ("region LIKE '%%'", 'T'),
    ("region LIKE 'E%t'", 'T'),
    ("region LIKE 'E%x'", 'F'),
    ("empty LIKE '%'", 'T'),
    ("empty LIKE '_'", 'F'),
    ("empty LIKE ''", 'T'),
    ("region LIKE ''", 'F'),
    ("region NOT LIKE 'US-%'", 'T'),
    ("region NOT LIKE 'EU%'", 'F'),
    ("pct LIKE '100\\%' ESCAPE '\\'", 'T'),
    ("pct LIKE '100!%' ESCAPE '!'", 'T'),
    ("str LIKE 'ab!%' ESCAPE '!'", 'F'),
    ("under LIKE 'a\\_b' ESCAPE '\\'", 'T'),
    ("str LIKE 'a\\_c' ESCAPE '\\'", 'F'),
    ("str LIKE 'a_c'", 'T'),
    ("pct LIKE '100%'", 'T'),
    ("pct LIKE '100\\%'", 'F'),
    ("under LIKE 'a!_b' ESCAPE '!'", 'T'),
    ("under LIKE 'a!!b' ESCAPE '!'", 'F'),
    ("region like 'EU%' escape '!'", 'T'),
    ("quote LIKE 'it''s'", 'T'),
    ("quote LIKE '%''%'", 'T'),
    ("city LIKE 'Z_rich _'", 'T'),
    ("city LIKE 'Z__rich%'", 'F'),
    ("city LIKE '%✓'", 'T'),
    ("city LIKE '______ _'", 'T'),
    ("city LIKE '_____ _' OR city LIKE '______'", 'F'),
    ("city LIKE '_______ _'", 'F'),
    ("nl LIKE 'line1_line2'", 'T'),
    ("nl LIKE 'line1%'", 'T'),
    ("missing LIKE '%'", 'U'),
    ("missing NOT LIKE '%'", 'U'),
    ("i3 LIKE '3'", 'U'),
    ("i3 NOT LIKE '3'", 'U'),
    ("NOT (i3 LIKE '3')", 'U'),
    ("str LIKE 'a%a%a%a%b'", 'F'),
    ("str LIKE '%b%'", 'T'),
    ("str LIKE '___'", 'T'),
    ("str LIKE '____'", 'F'),
    ("JMSType LIKE 'trade.%'", 'T'),
    ("JMSXGroupID LIKE 'g_'", 'T'),
    // --- IS NULL
    ("missing IS NULL", 'T'),
    ("missing IS NOT NULL", 'F'),
    ("str IS NULL", 'F'),
    ("str IS NOT NULL", 'T'),
    ("JMSCorrelationID IS NULL", 'T'),
    ("JMSMessageID IS NOT NULL", 'T'),
    ("JMSExpiration IS NULL", 'T'),
    ("JMSXGroupID IS NOT NULL", 'T'),
    ("NOT (missing IS NULL)", 'F'),
    ("missing iS nUlL", 'T'),
    ("empty IS NULL", 'F'),
    // --- headers and identifier kinds
    ("JMSPriority = 4", 'T'),
    ("JMSPriority > 3 AND JMSPriority < 5", 'T'),
    ("JMSType = 'trade.v1'", 'T'),
    ("JMSDeliveryMode = 'PERSISTENT'", 'T'),
    ("JMSDeliveryMode = 'NON_PERSISTENT'", 'F'),
    ("JMSMessageID = 'ID:1'", 'T'),
    ("JMSTimestamp > 1600000000000", 'T'),
    ("JMSTimestamp = 1700000000000", 'T'),
    ("JMSCorrelationID = 'x'", 'U'),
    ("JMSCorrelationID <> 'x'", 'U'),
    ("JMSXGroupID = 'g1'", 'T'),
    ("JMSXDeliveryCount >= 2", 'T'),
    ("JMS_vendor = 'x'", 'T'),
    ("JMSExpiration = 5", 'U'),
    ("JMSDestination IS NULL", 'T'),
    ("jmsPriority = 9", 'T'),
    ("JMSpriority IS NULL", 'T'),
    ("Größe = 42", 'T'),
    ("$cost = 10", 'T'),
    ("_id = 'u1'", 'T'),
    // --- precedence
    ("NOT i3 = 4", 'T'),
    ("NOT i3 = 3", 'F'),
    ("TRUE OR TRUE AND FALSE", 'T'),
    ("FALSE AND TRUE OR TRUE", 'T'),
    ("(TRUE OR TRUE) AND FALSE", 'F'),
    ("NOT FALSE AND FALSE", 'F'),
    ("NOT (FALSE AND FALSE)", 'T'),
    ("NOT NOT TRUE", 'T'),
    ("NOT NOT NOT TRUE", 'F'),
    ("i3 = 3 OR missing = 1", 'T'),
    ("i3 = 4 OR missing = 1", 'U'),
    ("i3 = 4 AND missing = 1", 'F'),
    ("t aNd NoT f", 'T'),
    ("cur not in ('x')", 'T'),
    ("TrUe", 'T'),
    ("false", 'F'),
    ("", 'T'),
    ("   ", 'T'),
    // --- literal forms
    ("i3 = 0x3", 'T'),
    ("i3 = 03", 'T'),
    ("i4 = 04L", 'T'),
    ("i7 = 0X7l", 'T'),
    ("i3 = 3L", 'T'),
    ("d3 = 3.", 'T'),
    ("d3 = 3e0", 'T'),
    ("d3 = .3e1", 'T'),
    ("d3 = 3D", 'T'),
    ("d3 = 3f", 'T'),
    ("d01 = 1e-1", 'T'),
    ("d01 = 0.1d", 'T'),
    ("d01 = 1E-1D", 'T'),
    ("lmax = 0x7FFFFFFFFFFFFFFF", 'T'),
    ("i7 = 0007", 'T'),
    ("d3 = 03.0", 'T'),
    ("i3 = 3.0", 'T'),
    ("i3 = +3", 'T'),
    ("-3 = -i3", 'T'),
    ("i3 = 30e-1", 'T'),
    ("l3 = 0.3E+1", 'T'),
];

#[derive(Clone, Copy)]
struct Check {
    total: usize,
}

fn check(s: &str, expected: Option<bool>, c: &mut Check) {
    let m = fixture();
    let parsed = sel(s);
    assert_eq!(parsed.evaluate(&m), expected, "evaluate({s:?})");
    assert_eq!(parsed.matches(&m), expected == Some(true), "matches({s:?})");
    let nnf = parsed.to_nnf();
    assert_eq!(nnf.evaluate(&m), expected, "NNF of {s:?} is {nnf}");
    let printed = parsed.to_string();
    let reparsed = Selector::parse(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
    assert_eq!(reparsed, parsed, "round trip of {s:?} via {printed:?}");
    c.total += 1;
}

#[test]
fn spec_rows() {
    let mut c = Check { total: 0 };
    for (s, code) in ROWS {
        check(s, expect(*code), &mut c);
    }
    assert!(c.total >= 250, "{} rows", c.total);
}

/// Every pair of numeric types, with `=`, `<>`, `<`, `>=` on equal and
/// unequal values: promotion makes them all comparable.
#[test]
fn numeric_type_pairs() {
    let types = ["b", "s", "i", "l", "f", "d"];
    let mut c = Check { total: 0 };
    for a in types {
        for b in types {
            check(&format!("{a}3 = {b}3"), Some(true), &mut c);
            check(&format!("{a}3 = {b}4"), Some(false), &mut c);
            check(&format!("{a}3 <> {b}4"), Some(true), &mut c);
            check(&format!("{a}3 < {b}4"), Some(true), &mut c);
            check(&format!("{a}4 < {b}3"), Some(false), &mut c);
            check(&format!("{a}3 >= {b}3"), Some(true), &mut c);
            check(&format!("{a}3 + {b}4 = 7"), Some(true), &mut c);
        }
    }
    assert_eq!(c.total, 6 * 6 * 7);
}

/// Every numeric type against string and boolean operands.
#[test]
fn numeric_vs_unlike_types() {
    let mut c = Check { total: 0 };
    for a in ["b", "s", "i", "l", "f", "d"] {
        check(&format!("{a}3 = '3'"), Some(false), &mut c);
        check(&format!("{a}3 <> '3'"), Some(false), &mut c);
        check(&format!("NOT ({a}3 = '3')"), Some(true), &mut c);
        check(&format!("{a}3 = TRUE"), Some(false), &mut c);
        check(&format!("{a}3 = three"), Some(false), &mut c);
        check(&format!("{a}3 < five"), Some(false), &mut c);
    }
}

/// The AND, OR and NOT truth tables with TRUE, FALSE and UNKNOWN operands,
/// each written three ways: boolean properties, comparisons, literals.
#[test]
fn truth_tables() {
    let spell: [[&str; 3]; 3] = [
        ["t", "f", "nobool"],
        ["(i3 = 3)", "(i3 = 4)", "(missing = 3)"],
        ["TRUE", "FALSE", "(missing > 0)"],
    ];
    let vals = [Some(true), Some(false), None];
    let and = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    };
    let or = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    };
    let mut c = Check { total: 0 };
    for sp in spell {
        for (i, a) in vals.iter().enumerate() {
            check(&format!("NOT {}", sp[i]), a.map(|x| !x), &mut c);
            for (j, b) in vals.iter().enumerate() {
                check(&format!("{} AND {}", sp[i], sp[j]), and(*a, *b), &mut c);
                check(&format!("{} OR {}", sp[i], sp[j]), or(*a, *b), &mut c);
                check(
                    &format!("NOT ({} AND {})", sp[i], sp[j]),
                    and(*a, *b).map(|x| !x),
                    &mut c,
                );
            }
        }
    }
    // Spot-check the tables against the spec explicitly.
    assert_eq!(and(None, Some(false)), Some(false));
    assert_eq!(or(None, Some(true)), Some(true));
    assert_eq!(c.total, 3 * (3 + 27));
}

/// `matches` is `evaluate == Some(true)`: UNKNOWN does not match.
#[test]
fn unknown_does_not_match() {
    let m = fixture();
    for s in ["missing = 1", "NOT (missing = 1)", "missing <> 1"] {
        assert_eq!(sel(s).evaluate(&m), None);
        assert!(!sel(s).matches(&m));
    }
}
