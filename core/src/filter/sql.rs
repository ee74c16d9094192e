//! SQL92 property filters, with the grammar and the semantics of Apache RocketMQ's filter
//! module (its SelectorParser, itself ActiveMQ's selector language cut down):
//!
//! - `OR` < `AND` < `=` `<>` `IS [NOT] NULL` < `>` `>=` `<` `<=` `[NOT] BETWEEN … AND …`
//!   `[NOT] IN ('a', …)` < unary `+` `-` `NOT` < literals, properties, parentheses. Keywords
//!   are case-insensitive, property names are not; `--` line and `/* */` block comments.
//! - Literals: `'str'` (`''` escapes a quote), integers (an `L` suffix allowed; int when it
//!   fits, else long), decimals and exponents (double), `TRUE`, `FALSE`, `NULL`.
//! - A property's value is its string; a missing one is NULL, and a comparison with NULL is
//!   unknown (three-valued logic: only TRUE matches). `=` / `<>` and the ordering operators
//!   convert a string to the other side's type (Java's Integer/Long/Double/Boolean.valueOf);
//!   two strings are ordered as doubles. A conversion that fails, or a type Java would not
//!   cast, fails the whole evaluation: the message does not match (Apache logs and skips).
//! - Refused at parse time, as Apache does: `<`-family operands that are string, boolean or
//!   NULL literals or boolean expressions; `= NULL`; a boolean literal compared with a
//!   non-boolean literal; `IN` on anything but a property; `BETWEEN` with NULL or descending
//!   literal bounds; an expression that is not boolean.
//!
//! Limits (rockfish's): [`MAX_SQL_LEN`] bytes and [`MAX_SQL_DEPTH`] levels of nesting, so
//! parsing and evaluation are bounded whatever a client sends. Evaluation borrows the
//! message's properties and allocates nothing.

use std::cmp::Ordering;

use logos::Logos;

/// The longest expression accepted.
pub const MAX_SQL_LEN: usize = 16 * 1024;
/// The deepest nesting accepted (parentheses, unary operators, chained comparisons).
pub const MAX_SQL_DEPTH: usize = 64;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid MessageSelector: {0}")]
pub struct SqlError(pub String);

#[derive(Logos, Debug, Clone, Copy, PartialEq)]
#[logos(skip r"[ \t\n\r\f]+")]
#[logos(skip r"--[^\n\r]*(\n|\r)")]
enum Tok<'s> {
    /// A block comment, skipped up to its end (an unterminated one is an error).
    #[token("/*", block_comment)]
    BlockComment,
    #[token("not", ignore(ascii_case))]
    Not,
    #[token("and", ignore(ascii_case))]
    And,
    #[token("or", ignore(ascii_case))]
    Or,
    #[token("between", ignore(ascii_case))]
    Between,
    #[token("in", ignore(ascii_case))]
    In,
    #[token("true", ignore(ascii_case))]
    True,
    #[token("false", ignore(ascii_case))]
    False,
    #[token("null", ignore(ascii_case))]
    Null,
    #[token("is", ignore(ascii_case))]
    Is,
    #[regex("0|[1-9][0-9]*[lL]?")]
    Decimal(&'s str),
    #[regex(r"[0-9]+\.[0-9]*([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+")]
    Float(&'s str),
    #[regex("'([^']|'')*'")]
    Str(&'s str),
    #[regex(r"[a-zA-Z_$][a-zA-Z0-9_$]*")]
    Ident(&'s str),
    #[token("=")]
    Eq,
    #[token("<>")]
    Ne,
    #[token(">")]
    Gt,
    #[token(">=")]
    Ge,
    #[token("<")]
    Lt,
    #[token("<=")]
    Le,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token(",")]
    Comma,
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
}

fn block_comment<'s>(lex: &mut logos::Lexer<'s, Tok<'s>>) -> logos::FilterResult<(), ()> {
    match lex.remainder().find("*/") {
        Some(end) => {
            lex.bump(end + 2);
            logos::FilterResult::Skip
        }
        None => logos::FilterResult::Error(()),
    }
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
enum Const {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(Box<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Const(Const),
    Prop(Box<str>),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    /// A property used as a condition: TRUE only if its value is a boolean (never, for a
    /// string property: Apache's BooleanCast).
    BoolCast(Box<Expr>),
    /// Left to right, as Apache's left-nested ANDs evaluate (flattened: chains of any length
    /// nest no deeper).
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Equal(Box<Expr>, Box<Expr>),
    Compare(Order, Box<Expr>, Box<Expr>),
    /// `prop [NOT] IN (...)`: the strings sorted for a binary search.
    In {
        prop: Box<str>,
        list: Vec<Box<str>>,
        not: bool,
    },
}

impl Expr {
    /// Apache's BooleanExpression: what may stand as a condition.
    fn is_boolean(&self) -> bool {
        matches!(
            self,
            Expr::Const(Const::Bool(_) | Const::Null)
                | Expr::Not(_)
                | Expr::BoolCast(_)
                | Expr::And(_)
                | Expr::Or(_)
                | Expr::Equal(..)
                | Expr::Compare(..)
                | Expr::In { .. }
        )
    }
}

/// A compiled SQL92 expression.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    expr: Expr,
}

impl SqlFilter {
    /// Parses `sql` as Apache's broker compiles a consumer's expression.
    pub fn parse(sql: &str) -> Result<SqlFilter, SqlError> {
        if sql.len() > MAX_SQL_LEN {
            return Err(SqlError(format!(
                "the expression is {} bytes long (limit {MAX_SQL_LEN})",
                sql.len()
            )));
        }
        let mut tokens = Vec::new();
        let mut lex = Tok::lexer(sql);
        while let Some(t) = lex.next() {
            match t {
                Ok(t) => tokens.push(t),
                Err(()) => {
                    return Err(SqlError(format!(
                        "unexpected {:?} at {}",
                        lex.slice(),
                        lex.span().start
                    )));
                }
            }
        }
        let mut p = Parser {
            tokens,
            at: 0,
            depth: 0,
        };
        let e = p.or()?;
        if p.at != p.tokens.len() {
            return Err(SqlError(format!(
                "unexpected {:?} after the expression",
                p.tokens[p.at]
            )));
        }
        Ok(SqlFilter {
            expr: as_boolean(e)?,
        })
    }

    /// Whether a message with these stored properties (`name\x01value\x02…`) matches:
    /// only TRUE matches; unknown (NULL) and a failed evaluation do not.
    pub fn matches(&self, properties: &[u8]) -> bool {
        matches!(eval(&self.expr, properties), Ok(V::Bool(true)))
    }
}

struct Parser<'s> {
    tokens: Vec<Tok<'s>>,
    at: usize,
    depth: usize,
}

fn err<T>(what: impl Into<String>) -> Result<T, SqlError> {
    Err(SqlError(what.into()))
}

/// Apache's asBooleanExpression: a property becomes a boolean cast; other non-boolean
/// expressions are refused.
fn as_boolean(e: Expr) -> Result<Expr, SqlError> {
    match e {
        e if e.is_boolean() => Ok(e),
        Expr::Prop(_) => Ok(Expr::BoolCast(Box::new(e))),
        e => err(format!(
            "Expression will not result in a boolean value: {e:?}"
        )),
    }
}

/// Apache's checkLessThanOperand: only numbers and non-boolean expressions are ordered.
fn orderable(e: &Expr) -> Result<(), SqlError> {
    match e {
        Expr::Const(Const::Int(_) | Const::Long(_) | Const::Double(_)) => Ok(()),
        Expr::Const(c) => err(format!("Value '{c:?}' cannot be compared.")),
        e if e.is_boolean() => err(format!("Value '{e:?}' cannot be compared.")),
        _ => Ok(()),
    }
}

/// Apache's createEqual checks: no NULL literal, and a boolean literal only against another.
fn equal(left: Expr, right: Expr) -> Result<Expr, SqlError> {
    for e in [&left, &right] {
        if matches!(e, Expr::Const(Const::Null)) {
            return err("'NULL' cannot be compared (use IS NULL).");
        }
    }
    if let (Expr::Const(l), Expr::Const(r)) = (&left, &right)
        && matches!(l, Const::Bool(_))
        && !matches!(r, Const::Bool(_))
    {
        return err(format!("'{l:?}' cannot be compared with '{r:?}'"));
    }
    Ok(Expr::Equal(Box::new(left), Box::new(right)))
}

fn compare(op: Order, left: Expr, right: Expr) -> Result<Expr, SqlError> {
    orderable(&left)?;
    orderable(&right)?;
    Ok(Expr::Compare(op, Box::new(left), Box::new(right)))
}

fn not(e: Expr) -> Expr {
    Expr::Not(Box::new(e))
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Option<Tok<'s>> {
        self.tokens.get(self.at).copied()
    }

    fn peek2(&self) -> Option<Tok<'s>> {
        self.tokens.get(self.at + 1).copied()
    }

    fn eat(&mut self, t: Tok<'s>) -> bool {
        if self.peek() == Some(t) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: Tok<'s>) -> Result<(), SqlError> {
        if self.eat(t) {
            Ok(())
        } else {
            err(format!("expected {t:?}, found {:?}", self.peek()))
        }
    }

    /// One level deeper (a parenthesis, a unary operator, a chained comparison).
    fn deeper(&mut self) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_SQL_DEPTH {
            return err(format!("nested deeper than {MAX_SQL_DEPTH} levels"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, SqlError> {
        let first = self.and()?;
        if self.peek() != Some(Tok::Or) {
            return Ok(first);
        }
        let mut all = vec![as_boolean(first)?];
        while self.eat(Tok::Or) {
            all.push(as_boolean(self.and()?)?);
        }
        Ok(Expr::Or(all))
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        let first = self.equality()?;
        if self.peek() != Some(Tok::And) {
            return Ok(first);
        }
        let mut all = vec![as_boolean(first)?];
        while self.eat(Tok::And) {
            all.push(as_boolean(self.equality()?)?);
        }
        Ok(Expr::And(all))
    }

    fn equality(&mut self) -> Result<Expr, SqlError> {
        let depth = self.depth;
        let mut left = self.comparison()?;
        loop {
            left = match (self.peek(), self.peek2()) {
                (Some(Tok::Eq), _) => {
                    self.at += 1;
                    equal(left, self.comparison()?)?
                }
                (Some(Tok::Ne), _) => {
                    self.at += 1;
                    not(equal(left, self.comparison()?)?)
                }
                (Some(Tok::Is), Some(Tok::Null)) => {
                    self.at += 2;
                    Expr::Equal(Box::new(left), Box::new(Expr::Const(Const::Null)))
                }
                (Some(Tok::Is), Some(Tok::Not)) => {
                    self.at += 2;
                    self.expect(Tok::Null)?;
                    not(Expr::Equal(
                        Box::new(left),
                        Box::new(Expr::Const(Const::Null)),
                    ))
                }
                _ => break,
            };
            self.deeper()?;
        }
        self.depth = depth;
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, SqlError> {
        let depth = self.depth;
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Gt) => Some(Order::Gt),
                Some(Tok::Ge) => Some(Order::Ge),
                Some(Tok::Lt) => Some(Order::Lt),
                Some(Tok::Le) => Some(Order::Le),
                _ => None,
            };
            left = if let Some(op) = op {
                self.at += 1;
                compare(op, left, self.unary()?)?
            } else {
                let negated = self.peek() == Some(Tok::Not)
                    && matches!(self.peek2(), Some(Tok::Between | Tok::In));
                if negated {
                    self.at += 1;
                }
                match self.peek() {
                    Some(Tok::Between) => {
                        self.at += 1;
                        let low = self.unary()?;
                        self.expect(Tok::And)?;
                        let high = self.unary()?;
                        self.between(left, low, high, negated)?
                    }
                    Some(Tok::In) => {
                        self.at += 1;
                        self.in_list(left, negated)?
                    }
                    _ => break,
                }
            };
            self.deeper()?;
        }
        self.depth = depth;
        Ok(left)
    }

    fn between(&mut self, v: Expr, low: Expr, high: Expr, negated: bool) -> Result<Expr, SqlError> {
        if negated {
            return Ok(Expr::Or(vec![
                compare(Order::Lt, v.clone(), low)?,
                compare(Order::Gt, v, high)?,
            ]));
        }
        if let (Expr::Const(l), Expr::Const(h)) = (&low, &high) {
            if matches!(l, Const::Null) || matches!(h, Const::Null) {
                return err("Illegal values of between, values can not be null!");
            }
            let ordered = java_compare(&value_of(h), &value_of(l))
                .map_err(|_| SqlError(format!("Illegal values of between: {l:?}, {h:?}")))?;
            if ordered == Ordering::Less {
                return err(format!(
                    "Illegal values of between, left value({l:?}) must less than or equal to \
                     right value({h:?})"
                ));
            }
        }
        Ok(Expr::And(vec![
            compare(Order::Ge, v.clone(), low)?,
            compare(Order::Le, v, high)?,
        ]))
    }

    fn in_list(&mut self, left: Expr, not: bool) -> Result<Expr, SqlError> {
        let Expr::Prop(prop) = left else {
            return err(format!(
                "Expected a property for In expression, got: {left:?}"
            ));
        };
        self.expect(Tok::LParen)?;
        let mut list = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Str(s)) => {
                    self.at += 1;
                    list.push(unquote(s));
                }
                t => return err(format!("IN takes string literals, found {t:?}")),
            }
            if !self.eat(Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::RParen)?;
        list.sort_unstable();
        list.dedup();
        Ok(Expr::In { prop, list, not })
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        let depth = self.depth;
        self.deeper()?;
        let e = match self.peek() {
            Some(Tok::Plus) => {
                self.at += 1;
                self.unary()?
            }
            Some(Tok::Minus) => {
                self.at += 1;
                Expr::Neg(Box::new(self.unary()?))
            }
            Some(Tok::Not) => {
                self.at += 1;
                not(as_boolean(self.unary()?)?)
            }
            _ => self.primary()?,
        };
        self.depth = depth;
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let Some(t) = self.peek() else {
            return err("the expression ends too soon");
        };
        self.at += 1;
        Ok(match t {
            Tok::Str(s) => Expr::Const(Const::Str(unquote(s))),
            Tok::Decimal(d) => Expr::Const(decimal(d)?),
            Tok::Float(f) => Expr::Const(float(f)?),
            Tok::True => Expr::Const(Const::Bool(true)),
            Tok::False => Expr::Const(Const::Bool(false)),
            Tok::Null => Expr::Const(Const::Null),
            Tok::Ident(name) => Expr::Prop(name.into()),
            Tok::LParen => {
                let e = self.or()?;
                self.expect(Tok::RParen)?;
                e
            }
            t => return err(format!("unexpected {t:?}")),
        })
    }
}

/// A string literal's text: quotes off, `''` as one quote.
fn unquote(s: &str) -> Box<str> {
    s[1..s.len() - 1].replace("''", "'").into_boxed_str()
}

/// Apache's createFromDecimal: a long (an `L` suffix allowed), an int if it fits.
fn decimal(text: &str) -> Result<Const, SqlError> {
    let digits = text.trim_end_matches(['l', 'L']);
    if digits.len() > 1 && digits.starts_with('0') {
        // Apache's literal is "0" or starts with 1-9 (no octal).
        return err(format!("{text} is not a decimal literal"));
    }
    let v: i64 = digits
        .parse()
        .map_err(|_| SqlError(format!("{text} is not a long")))?;
    Ok(match i32::try_from(v) {
        Ok(i) => Const::Int(i),
        Err(_) => Const::Long(v),
    })
}

fn float(text: &str) -> Result<Const, SqlError> {
    let v: f64 = text
        .parse()
        .map_err(|_| SqlError(format!("{text} is not a double")))?;
    if v.is_infinite() {
        return err(format!("{text} is greater than {}", f64::MAX));
    }
    Ok(Const::Double(v))
}

/// A value met while evaluating: borrowed from the expression or the message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum V<'a> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(&'a str),
}

fn value_of(c: &Const) -> V<'_> {
    match c {
        Const::Null => V::Null,
        Const::Bool(b) => V::Bool(*b),
        Const::Int(i) => V::Int(*i),
        Const::Long(l) => V::Long(*l),
        Const::Double(d) => V::Double(*d),
        Const::Str(s) => V::Str(s),
    }
}

/// An evaluation Java would end with an exception (a failed conversion, a bad cast): the
/// message does not match.
#[derive(Debug)]
struct Fail;

/// A three-valued condition's result, as Java's `(Boolean)` cast reads it.
fn as_bool(v: V<'_>) -> Result<Option<bool>, Fail> {
    match v {
        V::Null => Ok(None),
        V::Bool(b) => Ok(Some(b)),
        _ => Err(Fail),
    }
}

fn eval<'a>(e: &'a Expr, props: &'a [u8]) -> Result<V<'a>, Fail> {
    Ok(match e {
        Expr::Const(c) => value_of(c),
        Expr::Prop(name) => match rockfish_store::record::property(props, name) {
            None => V::Null,
            Some(v) => V::Str(std::str::from_utf8(v).map_err(|_| Fail)?),
        },
        Expr::Neg(e) => match eval(e, props)? {
            V::Int(i) => V::Int(i.wrapping_neg()),
            V::Long(l) => V::Long(l.wrapping_neg()),
            V::Double(d) => V::Double(-d),
            _ => V::Null,
        },
        Expr::Not(e) => match as_bool(eval(e, props)?)? {
            None => V::Null,
            Some(b) => V::Bool(!b),
        },
        Expr::BoolCast(e) => match eval(e, props)? {
            V::Null => V::Null,
            V::Bool(b) => V::Bool(b),
            _ => V::Bool(false),
        },
        Expr::And(all) => {
            let mut unknown = false;
            for e in all {
                match as_bool(eval(e, props)?)? {
                    Some(false) => return Ok(V::Bool(false)),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            if unknown { V::Null } else { V::Bool(true) }
        }
        Expr::Or(all) => {
            let mut unknown = false;
            for e in all {
                match as_bool(eval(e, props)?)? {
                    Some(true) => return Ok(V::Bool(true)),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            if unknown { V::Null } else { V::Bool(false) }
        }
        Expr::Equal(l, r) => {
            let (lv, rv) = (eval(l, props)?, eval(r, props)?);
            match (lv, rv) {
                (V::Null, V::Null) => V::Bool(true),
                (V::Null, _) => V::Null,
                (_, V::Null) => V::Bool(false),
                _ if java_equals(&lv, &rv) => V::Bool(true),
                _ => V::Bool(java_compare(&lv, &rv)? == Ordering::Equal),
            }
        }
        Expr::Compare(op, l, r) => {
            let lv = eval(l, props)?;
            if lv == V::Null {
                return Ok(V::Null);
            }
            let rv = eval(r, props)?;
            if rv == V::Null {
                return Ok(V::Null);
            }
            let ord = match (lv, rv) {
                // Two strings are ordered as numbers, or not at all.
                (V::Str(a), V::Str(b)) => java_compare(
                    &V::Double(java_double(a).ok_or(Fail)?),
                    &V::Double(java_double(b).ok_or(Fail)?),
                )?,
                _ => java_compare(&lv, &rv)?,
            };
            V::Bool(match op {
                Order::Gt => ord == Ordering::Greater,
                Order::Ge => ord != Ordering::Less,
                Order::Lt => ord == Ordering::Less,
                Order::Le => ord != Ordering::Greater,
            })
        }
        Expr::In { prop, list, not } => match rockfish_store::record::property(props, prop) {
            None => V::Null,
            Some(v) => {
                let v = std::str::from_utf8(v).map_err(|_| Fail)?;
                let found = list.binary_search_by(|s| (**s).cmp(v)).is_ok();
                V::Bool(found ^ not)
            }
        },
    })
}

/// Java's `equals` across the boxed types: same type and same value (Double by bits, so
/// NaN equals NaN and 0.0 differs from -0.0).
fn java_equals(l: &V<'_>, r: &V<'_>) -> bool {
    match (l, r) {
        (V::Bool(a), V::Bool(b)) => a == b,
        (V::Int(a), V::Int(b)) => a == b,
        (V::Long(a), V::Long(b)) => a == b,
        (V::Double(a), V::Double(b)) => java_double_bits(*a) == java_double_bits(*b),
        (V::Str(a), V::Str(b)) => a == b,
        _ => false,
    }
}

fn java_double_bits(d: f64) -> u64 {
    if d.is_nan() {
        f64::NAN.to_bits()
    } else {
        d.to_bits()
    }
}

/// Java's Double.compareTo: numeric order, -0.0 below 0.0, NaN above everything and equal
/// to itself.
fn java_double_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a
            .partial_cmp(&b)
            .unwrap_or(Ordering::Equal)
            .then_with(|| (a.to_bits() as i64).cmp(&(b.to_bits() as i64))),
    }
}

/// Apache's `__compare` with string conversion on: the left value is widened or the string
/// side parsed to the other's type; a pair Java has no conversion for orders as "less".
fn java_compare(l: &V<'_>, r: &V<'_>) -> Result<Ordering, Fail> {
    use V::*;
    let parse_int = |s: &str| s.parse::<i32>().map_err(|_| Fail);
    let parse_long = |s: &str| s.parse::<i64>().map_err(|_| Fail);
    let parse_double = |s: &str| java_double(s).ok_or(Fail);
    Ok(match (*l, *r) {
        (Bool(a), Bool(b)) => a.cmp(&b),
        (Int(a), Int(b)) => a.cmp(&b),
        (Long(a), Long(b)) => a.cmp(&b),
        (Double(a), Double(b)) => java_double_cmp(a, b),
        (Str(a), Str(b)) => a.encode_utf16().cmp(b.encode_utf16()),
        // A boolean against a string: Java casts the boolean to a string and throws.
        (Bool(_), Str(_)) => return Err(Fail),
        (Int(a), Long(b)) => (a as i64).cmp(&b),
        (Int(a), Double(b)) => java_double_cmp(a as f64, b),
        (Int(a), Str(b)) => a.cmp(&parse_int(b)?),
        (Long(a), Int(b)) => a.cmp(&(b as i64)),
        (Long(a), Double(b)) => java_double_cmp(a as f64, b),
        (Long(a), Str(b)) => a.cmp(&parse_long(b)?),
        (Double(a), Int(b)) => java_double_cmp(a, b as f64),
        (Double(a), Long(b)) => java_double_cmp(a, b as f64),
        (Double(a), Str(b)) => java_double_cmp(a, parse_double(b)?),
        (Str(a), Bool(b)) => a.eq_ignore_ascii_case("true").cmp(&b),
        (Str(a), Int(b)) => parse_int(a)?.cmp(&b),
        (Str(a), Long(b)) => parse_long(a)?.cmp(&b),
        (Str(a), Double(b)) => java_double_cmp(parse_double(a)?, b),
        _ => Ordering::Less,
    })
}

/// Java's Double.valueOf for the forms that matter: surrounding whitespace and control
/// characters ignored, an optional f/F/d/D suffix, NaN and Infinity spelled as Java does.
fn java_double(s: &str) -> Option<f64> {
    let s = s.trim_matches(|c: char| c <= ' ');
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    match unsigned {
        "NaN" => return Some(f64::NAN),
        "Infinity" => {
            return Some(if s.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        _ => {}
    }
    let s = s.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(s);
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::properties_string;

    fn props(pairs: &[(&str, &str)]) -> Vec<u8> {
        properties_string(pairs.iter().copied())
    }

    fn m(sql: &str, pairs: &[(&str, &str)]) -> bool {
        SqlFilter::parse(sql)
            .unwrap_or_else(|e| panic!("{sql:?}: {e}"))
            .matches(&props(pairs))
    }

    fn refused(sql: &str) -> bool {
        SqlFilter::parse(sql).is_err()
    }

    #[test]
    fn numbers_compare_with_string_properties_converted() {
        let a = [("a", "10")];
        assert!(m("a > 5", &a) && m("a >= 10", &a) && !m("a < 10", &a) && m("a <= 10", &a));
        assert!(m("a = 10", &a) && !m("a <> 10", &a) && m("a <> 11", &a));
        assert!(m("a BETWEEN 0 AND 10", &a) && !m("a NOT BETWEEN 0 AND 10", &a));
        assert!(
            m("a > 9.5", &a) && m("a < 3000000000", &a),
            "widened to double and long"
        );
        assert!(
            m("5 < a", &a),
            "a literal on the left converts the property"
        );
        assert!(m("a > -11", &a) && m("a > +9", &a));
        assert!(!m("-a < 0", &a), "a negated string property is NULL");
        // A decimal string against an int fails (Integer.valueOf): no match either way.
        let f = [("a", "10.5")];
        assert!(!m("a > 5", &f) && !m("a <= 5", &f) && !m("a <> 5", &f));
        assert!(m("a > 5.0", &f), "against a double it parses");
        // Two properties (both strings) are ordered as doubles.
        assert!(m("a > b", &[("a", "10"), ("b", "9")]), "not as strings");
        assert!(!m("a > b", &[("a", "x"), ("b", "9")]));
    }

    #[test]
    fn missing_properties_are_null_and_match_nothing_but_is_null() {
        let none: [(&str, &str); 0] = [];
        for sql in [
            "a > 1",
            "a = 'x'",
            "a IN ('x')",
            "a BETWEEN 1 AND 2",
            "NOT (a > 1)",
        ] {
            assert!(!m(sql, &none), "{sql}");
        }
        assert!(m("a IS NULL", &none) && !m("a IS NOT NULL", &none));
        assert!(m("a IS NULL OR a > 1", &none));
        assert!(!m("a IS NULL AND a > 1", &none), "unknown is not true");
        // Java's equality: a value compared with a missing property is FALSE, not unknown.
        assert!(m("a <> b", &[("a", "1")]) && !m("b <> a", &[("a", "1")]));
    }

    #[test]
    fn strings_in_lists_and_tags() {
        let p = [("TAGS", "TagA"), ("region", "eu-west"), ("q", "it's")];
        assert!(m("TAGS = 'TagA'", &p) && m("TAGS IN ('TagB', 'TagA')", &p));
        assert!(!m("TAGS NOT IN ('TagA')", &p) && m("region NOT IN ('us')", &p));
        assert!(m("q = 'it''s'", &p), "'' escapes a quote");
        assert!(
            !m("TAGS = 'taga'", &p),
            "values are case-sensitive, keywords not"
        );
        assert!(
            m("tags IS NULL and TAGS is not null", &p),
            "names are case-sensitive"
        );
        assert!(m("(TAGS = 'TagA' OR TAGS = 'TagB') AND region <> 'us'", &p));
        assert!(m("NOT (TAGS = 'TagB')", &p));
    }

    #[test]
    fn booleans_three_valued_logic_and_comments() {
        let p = [("flag", "TRUE"), ("n", "3")];
        assert!(m("flag = TRUE", &p), "a string converts to a boolean");
        assert!(
            !m("flag", &p),
            "a string property alone is never a true condition"
        );
        assert!(m("TRUE", &p) && !m("FALSE", &p) && !m("NULL", &p));
        assert!(m("n = 3 -- a comment\n AND /* another */ n > 2", &p));
        assert!(m("NOT NOT (n = 3)", &p));
        // A failed conversion fails the whole expression, even where OR would match.
        assert!(!m(
            "n = 'x' OR flag = 5 OR n = 3",
            &[("flag", "x"), ("n", "3")]
        ));
        assert!(
            m("n = 3 OR flag = 5", &[("flag", "x"), ("n", "3")]),
            "unless it is never reached"
        );
    }

    #[test]
    fn what_apache_refuses_at_parse_time() {
        for sql in [
            "",
            "a",        // fine in Apache? (a boolean cast) — see below
            "a > 'x'",  // strings are not ordered
            "a < TRUE", // nor booleans
            "a > NULL",
            "a = NULL", // use IS NULL
            "TRUE = 1", // boolean literal against another type
            "1",        // not a condition
            "'x'",
            "a BETWEEN 2 AND 1", // descending bounds
            "a BETWEEN NULL AND 1",
            "a BETWEEN 'a' AND 'b'",
            "1 IN ('a')",  // IN on a property only
            "a IN (1, 2)", // of strings only
            "a IN ()",
            "(a = 1",
            "a = 1)",
            "a == 1",
            "a = 1 AND",
            "a = 99999999999999999999", // not a long
            "a = 007",
            "a = 'unterminated",
            "a = 1 -- a comment without its line end",
            "(a = 1) > 2", // a condition is not ordered
            "a ! 1",
        ] {
            if sql == "a" {
                assert!(!refused(sql), "a property alone is a boolean cast");
                continue;
            }
            assert!(refused(sql), "{sql:?} should be refused");
        }
    }

    #[test]
    fn enormous_or_deep_expressions_are_refused_quickly() {
        let deep = format!("{}a = 1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(refused(&deep));
        let nots = format!("{}a = 1", "NOT ".repeat(1_000));
        assert!(refused(&nots));
        let long = "a = 1 OR ".repeat(2_000) + "a = 1";
        assert!(refused(&long), "past MAX_SQL_LEN");
        // Long flat chains within the length limit nest no deeper.
        let chain = "a = 1 OR ".repeat(1_000) + "a = 2";
        assert!(chain.len() < MAX_SQL_LEN);
        assert!(m(&chain, &[("a", "2")]));
        let eqs = "a = ".repeat(200) + "1";
        assert!(refused(&eqs), "chained comparisons count as depth");
    }

    #[test]
    fn java_conversions() {
        assert_eq!(java_double(" 1.5e3d "), Some(1500.0));
        assert!(java_double("NaN").unwrap().is_nan());
        assert_eq!(java_double("-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(java_double("inf"), None);
        assert_eq!(java_double("0x10"), None);
        assert_eq!(java_double(""), None);
        assert!(java_double_cmp(-0.0, 0.0) == Ordering::Less);
        assert!(java_double_cmp(f64::NAN, f64::INFINITY) == Ordering::Greater);
    }
}
