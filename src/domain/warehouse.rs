//! Prototype 002's daily batches as rules (`models/warehouse.yaml`): the
//! columns of the customers and sales files with an import schema's rules,
//! how their text is normalized, and the row rules; a raw row cleaned into
//! a [`Customer`] or a [`Sale`], or refused with the [`Fault`] (a rule code
//! and a reason) the quality report and the quarantine keep.
//!
//! Architecture Invariant: pure; a row's fault depends only on the row, the
//! rules and the load's instant (duplicates and unknown customers, which
//! need the warehouse, are decided by the loader under the codes here).

use chrono::NaiveDateTime;
use rust_decimal::Decimal;

use crate::domain::rules::{Bound, ColumnRule, ModelError, ValidationSchema};
use crate::domain::value::{ValueType, parse_number, parse_timestamp, parse_timestamptz};

/// The customers file's columns, in the order a [`Customer`] is read.
pub const CUSTOMER_COLUMNS: [&str; 3] = ["ID", "Name", "City"];
/// The sales file's columns, in the order a [`Sale`] is read.
pub const SALES_COLUMNS: [&str; 5] = [
    "CustomerID",
    "Product",
    "SalesAmount",
    "ShopId",
    "TransactionDate",
];

/// The code of a sale seen before (in its batch or an earlier one).
pub const DUPLICATE: &str = "duplicate";
/// The code of a customer id given twice in one customers file.
pub const DUPLICATE_ID: &str = "duplicate_id";
/// The code of a sale of a customer the warehouse does not know.
pub const UNKNOWN_CUSTOMER: &str = "unknown_customer";

const BUILT_IN: &str = include_str!("../../models/warehouse.yaml");

/// How a text column's case is normalized (whitespace is always trimmed
/// and collapsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Keep,
    Title,
    Lower,
    Upper,
}

/// The rules of one file.
#[derive(Debug, Clone)]
struct FileRules {
    /// In the file's column order (`CUSTOMER_COLUMNS` or `SALES_COLUMNS`).
    columns: Vec<ColumnRule>,
    cases: Vec<Case>,
}

/// The warehouse's rules.
#[derive(Debug, Clone)]
pub struct WarehouseRules {
    customers: FileRules,
    sales: FileRules,
    /// Sales dated after the load are refused.
    not_future: bool,
}

/// Why a row was refused: its rule code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub rule: String,
    pub reason: String,
}

impl Fault {
    pub fn new(rule: impl Into<String>, reason: impl Into<String>) -> Fault {
        Fault {
            rule: rule.into(),
            reason: reason.into(),
        }
    }
}

/// A clean customer row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub city: String,
}

/// A clean sales row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    pub customer_id: i64,
    pub product: String,
    pub amount: Decimal,
    pub shop_id: i64,
    pub at: NaiveDateTime,
}

/// What makes two sales the same sale: customer, product, shop, instant
/// and amount.
pub type SaleKey = (i64, String, i64, NaiveDateTime, Decimal);

impl Sale {
    pub fn key(&self) -> SaleKey {
        (
            self.customer_id,
            self.product.clone(),
            self.shop_id,
            self.at,
            self.amount.normalize(),
        )
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[allow(dead_code)]
    warehouse: String,
    customers: yaml_serde::Value,
    sales: yaml_serde::Value,
    #[serde(default)]
    normalize: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    rows: RowsFile,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RowsFile {
    not_future: Option<String>,
    #[serde(default)]
    duplicate: Vec<String>,
    known_customer: Option<String>,
}

impl WarehouseRules {
    /// The built-in rules (`models/warehouse.yaml`).
    pub fn builtin() -> WarehouseRules {
        WarehouseRules::parse(BUILT_IN, "built-in warehouse.yaml")
            .expect("the built-in rules parse")
    }

    pub fn parse(text: &str, file: &str) -> Result<WarehouseRules, ModelError> {
        let shape = |reason: String| ModelError::Shape {
            file: file.to_owned(),
            reason,
        };
        crate::domain::rules::nesting(text).map_err(shape)?;
        let parsed: RulesFile = yaml_serde::from_str(text).map_err(|e| ModelError::Yaml {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        let customers = ValidationSchema::from_yaml(parsed.customers, file)?;
        let sales = ValidationSchema::from_yaml(parsed.sales, file)?;
        for (name, case) in &parsed.normalize {
            if !CUSTOMER_COLUMNS.contains(&name.as_str()) && !SALES_COLUMNS.contains(&name.as_str())
            {
                return Err(shape(format!("normalize: no column {name}")));
            }
            if !matches!(case.as_str(), "title" | "lower" | "upper" | "keep") {
                return Err(shape(format!(
                    "normalize: {name}: {case:?} is not title, lower, upper or keep"
                )));
            }
        }
        let rows = parsed.rows;
        // The row rules are the warehouse's own: they are declared so the
        // file says what is checked, and checked so it says it truly.
        let mut identity: Vec<&str> = SALES_COLUMNS.to_vec();
        identity.sort_unstable();
        let mut declared: Vec<&str> = rows.duplicate.iter().map(String::as_str).collect();
        declared.sort_unstable();
        if !declared.is_empty() && declared != identity {
            return Err(shape(format!(
                "rows: duplicate: a sale's identity is {}",
                identity.join(", ")
            )));
        }
        if rows
            .known_customer
            .as_deref()
            .is_some_and(|c| c != "CustomerID")
        {
            return Err(shape(
                "rows: known_customer: the column is CustomerID".into(),
            ));
        }
        if rows
            .not_future
            .as_deref()
            .is_some_and(|c| c != "TransactionDate")
        {
            return Err(shape(
                "rows: not_future: the column is TransactionDate".into(),
            ));
        }
        let case_of = |name: &str| match parsed.normalize.get(name).map(String::as_str) {
            Some("title") => Case::Title,
            Some("lower") => Case::Lower,
            Some("upper") => Case::Upper,
            _ => Case::Keep,
        };
        let file_rules = |schema: ValidationSchema, names: &[&str]| {
            let mut columns = Vec::with_capacity(names.len());
            for name in names {
                let rule = schema
                    .column(name)
                    .ok_or_else(|| shape(format!("no rules for column {name}")))?;
                columns.push(rule.clone());
            }
            if let Some(extra) = schema
                .columns
                .iter()
                .find(|c| !names.contains(&c.name.as_str()))
            {
                return Err(shape(format!(
                    "column {} is not one of {}",
                    extra.name,
                    names.join(", ")
                )));
            }
            Ok(FileRules {
                cases: names.iter().map(|n| case_of(n)).collect(),
                columns,
            })
        };
        let rules = WarehouseRules {
            customers: file_rules(customers, &CUSTOMER_COLUMNS)?,
            sales: file_rules(sales, &SALES_COLUMNS)?,
            not_future: rows.not_future.is_some(),
        };
        let typed = [
            (&rules.customers.columns[0], ValueType::Int),
            (&rules.sales.columns[0], ValueType::Int),
            (&rules.sales.columns[2], ValueType::Float),
            (&rules.sales.columns[3], ValueType::Int),
            (&rules.sales.columns[4], ValueType::Timestamp),
        ];
        for (rule, ty) in typed {
            if rule.ty != ty {
                return Err(shape(format!(
                    "{} must be of type {}",
                    rule.name,
                    ty.name()
                )));
            }
        }
        Ok(rules)
    }

    /// The amounts above `max` are absurd (`--max-amount`).
    pub fn with_max_amount(mut self, max: Decimal) -> WarehouseRules {
        self.sales.columns[2].max = Some(Bound::Number(max));
        self
    }

    /// A customers row (`ID, Name, City`) cleaned, or why not.
    pub fn customer(&self, fields: [&str; 3]) -> Result<Customer, Fault> {
        let [id, name, city] = self.customers.clean(fields)?;
        Ok(Customer {
            id: id
                .parse()
                .map_err(|_| bad(&self.customers.columns[0], &id))?,
            name,
            city,
        })
    }

    /// A sales row (`CustomerID, Product, SalesAmount, ShopId,
    /// TransactionDate`) cleaned, or why not; `now` is the load's instant.
    pub fn sale(&self, fields: [&str; 5], now: NaiveDateTime) -> Result<Sale, Fault> {
        let [customer, product, amount, shop, at] = self.sales.clean(fields)?;
        let columns = &self.sales.columns;
        let amount_value = parse_number(&amount).ok_or_else(|| bad(&columns[2], &amount))?;
        if amount_value.normalize().scale() > 2 {
            return Err(Fault::new(
                code("bad", &columns[2].name),
                format!("{amount} has more than 2 decimals (cents are the smallest unit)"),
            ));
        }
        let at_value = parse_timestamp(&at)
            .or_else(|| parse_timestamptz(&at).map(|t| t.naive_utc()))
            .ok_or_else(|| bad(&columns[4], &at))?;
        if self.not_future && at_value > now {
            return Err(Fault::new(
                "future_transaction_date",
                format!(
                    "{at} is after the load ({})",
                    now.format("%Y-%m-%d %H:%M:%S")
                ),
            ));
        }
        Ok(Sale {
            customer_id: customer.parse().map_err(|_| bad(&columns[0], &customer))?,
            product,
            amount: amount_value,
            shop_id: shop.parse().map_err(|_| bad(&columns[3], &shop))?,
            at: at_value,
        })
    }
}

impl FileRules {
    /// Each field normalized and checked, in column order.
    fn clean<const N: usize>(&self, fields: [&str; N]) -> Result<[String; N], Fault> {
        let mut out: [String; N] = std::array::from_fn(|_| String::new());
        for (i, raw) in fields.iter().enumerate() {
            let rule = &self.columns[i];
            let text = normalize(raw, self.cases[i]);
            if text.is_empty() {
                if rule.required {
                    return Err(Fault::new(
                        code("missing", &rule.name),
                        format!("{} is empty", rule.name),
                    ));
                }
            } else {
                rule.check(&text).map_err(|v| {
                    let kind = match v.rule {
                        "type" => "bad",
                        "min" => "below_min",
                        "max" => "above_max",
                        other => other,
                    };
                    Fault::new(
                        code(kind, &rule.name),
                        format!("{}: {}", rule.name, v.reason),
                    )
                })?;
            }
            out[i] = text;
        }
        Ok(out)
    }
}

fn bad(rule: &ColumnRule, text: &str) -> Fault {
    Fault::new(
        code("bad", &rule.name),
        format!("{}: {text:?} is not a {}", rule.name, rule.type_name()),
    )
}

/// `kind_column`, the column in snake case (`SalesAmount` → `sales_amount`,
/// `ID` → `id`).
fn code(kind: &str, column: &str) -> String {
    let mut out = format!("{kind}_");
    let chars: Vec<char> = column.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase() || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
        if boundary {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Whitespace trimmed and collapsed to single spaces, then the case.
pub fn normalize(raw: &str, case: Case) -> String {
    let collapsed = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    match case {
        Case::Keep => collapsed,
        Case::Lower => collapsed.to_lowercase(),
        Case::Upper => collapsed.to_uppercase(),
        Case::Title => collapsed
            .split(' ')
            .map(|word| {
                let mut chars = word.chars();
                match chars.next() {
                    Some(first) => {
                        first.to_uppercase().collect::<String>() + &chars.as_str().to_lowercase()
                    }
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> NaiveDateTime {
        parse_timestamp("2025-06-30 12:00:00").unwrap()
    }

    fn check_sale(fields: [&str; 5], expect: Result<&str, &str>) {
        let got = WarehouseRules::builtin().sale(fields, now());
        match (got, expect) {
            (Ok(sale), Ok(shown)) => assert_eq!(
                format!(
                    "{}|{}|{}|{}|{}",
                    sale.customer_id, sale.product, sale.amount, sale.shop_id, sale.at
                ),
                shown,
                "{fields:?}"
            ),
            (Err(fault), Err(rule)) => assert_eq!(fault.rule, rule, "{fields:?}: {}", fault.reason),
            (got, expect) => panic!("{fields:?}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn sales_rows_are_cleaned_or_refused_with_a_code() {
        check_sale(
            [
                "17",
                "  wireless   MOUSE ",
                "19.90",
                "3",
                "2025-06-01 10:15:00",
            ],
            Ok("17|Wireless Mouse|19.90|3|2025-06-01 10:15:00"),
        );
        check_sale(
            [" 17 ", "Mouse", "20", "3", "2025-06-01T10:15:00Z"],
            Ok("17|Mouse|20|3|2025-06-01 10:15:00"),
        );
        check_sale(
            ["", "Mouse", "1", "3", "2025-06-01"],
            Err("missing_customer_id"),
        );
        check_sale(
            ["x7", "Mouse", "1", "3", "2025-06-01"],
            Err("bad_customer_id"),
        );
        check_sale(
            ["0", "Mouse", "1", "3", "2025-06-01"],
            Err("below_min_customer_id"),
        );
        check_sale(["7", "   ", "1", "3", "2025-06-01"], Err("missing_product"));
        check_sale(
            ["7", "Mouse", "", "3", "2025-06-01"],
            Err("missing_sales_amount"),
        );
        check_sale(
            ["7", "Mouse", "ten", "3", "2025-06-01"],
            Err("bad_sales_amount"),
        );
        check_sale(
            ["7", "Mouse", "1.005", "3", "2025-06-01"],
            Err("bad_sales_amount"),
        );
        check_sale(
            ["7", "Mouse", "-5", "3", "2025-06-01"],
            Err("below_min_sales_amount"),
        );
        check_sale(
            ["7", "Mouse", "250000", "3", "2025-06-01"],
            Err("above_max_sales_amount"),
        );
        check_sale(
            ["7", "Mouse", "1", "", "2025-06-01"],
            Err("missing_shop_id"),
        );
        check_sale(
            ["7", "Mouse", "1", "3", ""],
            Err("missing_transaction_date"),
        );
        check_sale(
            ["7", "Mouse", "1", "3", "31/02/2025"],
            Err("bad_transaction_date"),
        );
        check_sale(
            ["7", "Mouse", "1", "3", "2025-07-01"],
            Err("future_transaction_date"),
        );
    }

    #[test]
    fn customers_are_normalized_and_the_threshold_is_configurable() {
        let rules = WarehouseRules::builtin();
        assert_eq!(
            rules.customer([" 4 ", "  jean   DUPONT", "paris "]),
            Ok(Customer {
                id: 4,
                name: "Jean Dupont".into(),
                city: "Paris".into()
            })
        );
        assert_eq!(
            rules.customer(["4", "Jean", ""]).unwrap_err().rule,
            "missing_city"
        );
        let strict = rules.with_max_amount(Decimal::from(10));
        assert_eq!(
            strict
                .sale(["7", "Mouse", "11", "3", "2025-06-01"], now())
                .unwrap_err()
                .rule,
            "above_max_sales_amount"
        );
    }

    #[test]
    fn rule_files_are_checked() {
        let bad = |text: &str, needle: &str| {
            let err = WarehouseRules::parse(text, "w.yaml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        };
        let base = "warehouse: w\ncustomers: {ID: int, Name: str, City: str}\n";
        bad(
            &format!(
                "{base}sales: {{CustomerID: int, Product: str, SalesAmount: float, ShopId: int}}\n"
            ),
            "no rules for column TransactionDate",
        );
        bad(
            &format!(
                "{base}sales: {{CustomerID: int, Product: str, SalesAmount: int, ShopId: int, TransactionDate: timestamp}}\n"
            ),
            "SalesAmount must be of type float",
        );
        bad(
            &format!(
                "{base}sales: {{CustomerID: int, Product: str, SalesAmount: float, ShopId: int, TransactionDate: timestamp}}\nnormalize: {{Product: shout}}\n"
            ),
            "is not title, lower, upper or keep",
        );
        bad(
            &format!(
                "{base}sales: {{CustomerID: int, Product: str, SalesAmount: float, ShopId: int, TransactionDate: timestamp, Extra: str}}\n"
            ),
            "column Extra is not one of",
        );
    }

    #[test]
    fn codes_are_snake_case() {
        for (column, expect) in [
            ("ID", "bad_id"),
            ("CustomerID", "bad_customer_id"),
            ("SalesAmount", "bad_sales_amount"),
            ("ShopId", "bad_shop_id"),
            ("TransactionDate", "bad_transaction_date"),
        ] {
            assert_eq!(code("bad", column), expect);
        }
    }
}
