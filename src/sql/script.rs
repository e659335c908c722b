//! Splits a PostgreSQL script into statements with their source positions, so that
//! `clue create-schema` can run them one by one and report FILE:LINE:COLUMN on failure.
//!
//! This is a lexer, not a parser: it only has to know where a `;` really ends a
//! statement. It follows psql's own splitting rules (psqlscan.l) because the scripts
//! users hand us were written for, and tested with, psql:
//!
//! * `;` inside quotes, comments, dollar-quoted bodies or parentheses does not end a
//!   statement (psql tracks parenthesis depth too, e.g. for `CREATE RULE ... DO (a; b)`).
//! * In `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, a SQL-standard `BEGIN ATOMIC ... END`
//!   body may contain `;`; psql tracks BEGIN/CASE/END nesting there, and so do we.
//! * A backslash at the start of a statement is a psql meta-command, which runs to the
//!   end of its line.
//!
//! Plain `'...'` strings are read with `standard_conforming_strings = on` (the default
//! since PostgreSQL 9.1): a backslash is an ordinary character there, only `E'...'`
//! strings treat it as an escape.
//!
//! Positions are 1-based; columns count characters (not bytes) and lines are separated
//! by `\n`, so CRLF files come out right (the `\r` is just trailing whitespace).

use thiserror::Error;

/// One statement of a script, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    /// From the first to the last significant character: surrounding whitespace and
    /// comments and the terminating `;` are excluded, so the text can be sent as is and
    /// a server error position maps back through [`position_in_script`].
    pub text: &'a str,
    /// 1-based line of the first character of `text`.
    pub line: usize,
    /// 1-based column, in characters, of the first character of `text`.
    pub column: usize,
}

/// What the caller should do with a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ordinary SQL, to be executed.
    Sql,
    /// BEGIN / START TRANSACTION / COMMIT / END / ROLLBACK / ABORT: the caller runs the
    /// whole script in its own transaction, so these would break its atomicity.
    TransactionControl,
    /// A psql backslash command (`\c db`, `\i file`, `\set`): the server cannot run it.
    PsqlMeta,
}

impl Statement<'_> {
    pub fn kind(&self) -> Kind {
        kind_of(self.text)
    }
}

/// Why a script could not be split. Each error points at where the unterminated
/// construct started, since its end (the end of the file) says nothing useful.
// Every way a script fails to split is something left unterminated.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SplitError {
    #[error("unterminated single-quoted string starting at line {line}, column {column}")]
    UnterminatedString { line: usize, column: usize },
    #[error("unterminated quoted identifier starting at line {line}, column {column}")]
    UnterminatedIdentifier { line: usize, column: usize },
    #[error(
        "unterminated dollar-quoted string {delimiter} starting at line {line}, column {column}"
    )]
    UnterminatedDollarQuote {
        /// The opening delimiter, e.g. `$body$` or `$$`.
        delimiter: String,
        line: usize,
        column: usize,
    },
    #[error("unterminated block comment starting at line {line}, column {column}")]
    UnterminatedBlockComment { line: usize, column: usize },
}

impl SplitError {
    pub fn line(&self) -> usize {
        match self {
            Self::UnterminatedString { line, .. }
            | Self::UnterminatedIdentifier { line, .. }
            | Self::UnterminatedDollarQuote { line, .. }
            | Self::UnterminatedBlockComment { line, .. } => *line,
        }
    }

    pub fn column(&self) -> usize {
        match self {
            Self::UnterminatedString { column, .. }
            | Self::UnterminatedIdentifier { column, .. }
            | Self::UnterminatedDollarQuote { column, .. }
            | Self::UnterminatedBlockComment { column, .. } => *column,
        }
    }
}

/// Splits `script` into its statements, in order. Statements made only of whitespace
/// and comments (e.g. the empty one in `;;`) are dropped; a last statement without `;`
/// is kept.
pub fn split(script: &str) -> Result<Vec<Statement<'_>>, SplitError> {
    Splitter::new(script).run()
}

/// Maps a PostgreSQL error position (a 1-based offset in *characters* into the query
/// text, as in the `position` field of an error report) to a script line and column.
/// The statement must have been sent exactly as `stmt.text`. A position past the end
/// (the server uses one for "at end of input") lands just after the last character.
pub fn position_in_script(stmt: &Statement<'_>, char_offset_1based: usize) -> (usize, usize) {
    let (mut line, mut column) = (stmt.line, stmt.column);
    let mut remaining = char_offset_1based.saturating_sub(1);
    for c in stmt.text.chars() {
        if remaining == 0 {
            break;
        }
        remaining -= 1;
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column + remaining)
}

fn kind_of(text: &str) -> Kind {
    if text.starts_with('\\') {
        return Kind::PsqlMeta;
    }
    let words = leading_words(text, 3);
    let is = |i: usize, kw: &str| words.get(i).is_some_and(|w| w.eq_ignore_ascii_case(kw));
    if is(0, "start") {
        return if is(1, "transaction") {
            Kind::TransactionControl
        } else {
            Kind::Sql
        };
    }
    if !["begin", "commit", "end", "rollback", "abort"]
        .iter()
        .any(|kw| is(0, kw))
    {
        return Kind::Sql;
    }
    // Some statements that start like transaction control are not about the caller's
    // transaction: ROLLBACK TO SAVEPOINT works inside it and must run, and
    // COMMIT/ROLLBACK PREPARED act on another (prepared) transaction. Skipping them
    // would silently change what the script does, so they are run and left to the server.
    let next = if is(1, "work") || is(1, "transaction") {
        2
    } else {
        1
    };
    if is(next, "to") || is(next, "prepared") || is(1, "atomic") {
        Kind::Sql
    } else {
        Kind::TransactionControl
    }
}

/// The first `max` keywords/identifiers of a statement, skipping whitespace and
/// comments between them; stops at the first token that is not a bare word.
fn leading_words(text: &str, max: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() && words.len() < max {
        let b = bytes[i];
        if is_space(b) {
            i += 1;
        } else if starts_with_at(bytes, i, b"--") {
            i = line_end(bytes, i);
        } else if starts_with_at(bytes, i, b"/*") {
            match block_comment_end(bytes, i) {
                Some(end) => i = end,
                None => break,
            }
        } else if is_ident_start(b) {
            let end = ident_end(bytes, i, true);
            words.push(&text[i..end]);
            i = end;
        } else {
            break;
        }
    }
    words
}

/// The leading keywords psql looks at to recognise `CREATE [OR REPLACE]
/// FUNCTION|PROCEDURE`, the only statements that can contain `BEGIN ATOMIC` bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadWord {
    Create,
    Or,
    Replace,
    Routine,
}

impl HeadWord {
    fn parse(word: &str) -> Option<Self> {
        let eq = |kw: &str| word.eq_ignore_ascii_case(kw);
        if eq("create") {
            Some(Self::Create)
        } else if eq("or") {
            Some(Self::Or)
        } else if eq("replace") {
            Some(Self::Replace)
        } else if eq("function") || eq("procedure") {
            Some(Self::Routine)
        } else {
            None
        }
    }
}

struct Splitter<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    locator: Locator<'a>,
    out: Vec<Statement<'a>>,
    // State of the statement being read.
    start: Option<usize>,
    end: usize,
    paren_depth: usize,
    begin_depth: usize,
    words_seen: usize,
    head: [Option<HeadWord>; 4],
}

impl<'a> Splitter<'a> {
    fn new(src: &'a str) -> Self {
        // A UTF-8 byte order mark is invisible in editors, so it must not shift columns,
        // and the server would reject it as part of the first statement.
        let pos = if src.starts_with('\u{feff}') { 3 } else { 0 };
        Splitter {
            src,
            bytes: src.as_bytes(),
            pos,
            locator: Locator {
                bytes: src.as_bytes(),
                pos,
                line: 1,
                column: 1,
            },
            out: Vec::new(),
            start: None,
            end: 0,
            paren_depth: 0,
            begin_depth: 0,
            words_seen: 0,
            head: [None; 4],
        }
    }

    // All positions below are byte offsets. Every construct we look for is delimited by
    // ASCII bytes, and bytes of multi-byte UTF-8 characters are never ASCII, so scanning
    // bytes is safe and every offset we stop at is a character boundary.
    fn run(mut self) -> Result<Vec<Statement<'a>>, SplitError> {
        while let Some(&b) = self.bytes.get(self.pos) {
            let start = self.pos;
            match b {
                _ if is_space(b) => self.pos += 1,
                b'-' if self.at(b"--") => self.pos = line_end(self.bytes, self.pos),
                b'/' if self.at(b"/*") => match block_comment_end(self.bytes, start) {
                    Some(end) => self.pos = end,
                    None => {
                        let (line, column) = self.locator.locate(start);
                        return Err(SplitError::UnterminatedBlockComment { line, column });
                    }
                },
                b';' => {
                    self.pos += 1;
                    if self.paren_depth == 0 && self.begin_depth == 0 {
                        self.finish();
                    } else {
                        self.mark(start);
                    }
                }
                b'\\' if self.start.is_none() => self.psql_meta(),
                b'\'' | b'"' => self.quoted(start, false)?,
                b'$' => self.dollar()?,
                b'(' => {
                    self.paren_depth += 1;
                    self.pos += 1;
                    self.mark(start);
                }
                b')' => {
                    self.paren_depth = self.paren_depth.saturating_sub(1);
                    self.pos += 1;
                    self.mark(start);
                }
                _ if is_ident_char(b) => self.word()?,
                _ => {
                    self.pos += 1;
                    self.mark(start);
                }
            }
        }
        self.finish();
        Ok(self.out)
    }

    fn at(&self, s: &[u8]) -> bool {
        starts_with_at(self.bytes, self.pos, s)
    }

    /// Records that the current statement has significant text in `start..self.pos`.
    fn mark(&mut self, start: usize) {
        if self.start.is_none() {
            self.start = Some(start);
        }
        self.end = self.pos;
    }

    /// Ends the current statement, keeping it only if it had significant text.
    fn finish(&mut self) {
        if let Some(start) = self.start.take() {
            let (line, column) = self.locator.locate(start);
            self.out.push(Statement {
                text: &self.src[start..self.end],
                line,
                column,
            });
        }
        self.paren_depth = 0;
        self.begin_depth = 0;
        self.words_seen = 0;
        self.head = [None; 4];
    }

    /// psql reads a backslash command up to the end of its line, `;` included.
    fn psql_meta(&mut self) {
        let start = self.pos;
        self.pos = line_end(self.bytes, start);
        let mut end = self.pos;
        while end > start && is_space(self.bytes[end - 1]) {
            end -= 1;
        }
        self.start = Some(start);
        self.end = end;
        self.finish();
    }

    /// A `'...'` string (with `''` escapes, and `\` escapes when `backslash` is set) or a
    /// `"..."` identifier (with `""` escapes); `self.pos` is on the opening quote and
    /// `start` is where the token began (before the `E` of `E'...'`).
    fn quoted(&mut self, start: usize, backslash: bool) -> Result<(), SplitError> {
        let quote = self.bytes[self.pos];
        let mut i = self.pos + 1;
        while let Some(&b) = self.bytes.get(i) {
            if b == quote {
                if self.bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                    continue;
                }
                self.pos = i + 1;
                self.mark(start);
                return Ok(());
            }
            i += if backslash && b == b'\\' { 2 } else { 1 };
        }
        let (line, column) = self.locator.locate(start);
        Err(if quote == b'"' {
            SplitError::UnterminatedIdentifier { line, column }
        } else {
            SplitError::UnterminatedString { line, column }
        })
    }

    /// `$1` parameters, `$tag$...$tag$` strings, or a lone `$`.
    fn dollar(&mut self) -> Result<(), SplitError> {
        let start = self.pos;
        let mut i = start + 1;
        if self.bytes.get(i).is_some_and(u8::is_ascii_digit) {
            while self.bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            self.pos = i;
            self.mark(start);
            return Ok(());
        }
        if self.bytes.get(i).is_some_and(|&b| is_ident_start(b)) {
            i = ident_end(self.bytes, i, false);
        }
        if self.bytes.get(i) != Some(&b'$') {
            // Not a delimiter (e.g. `$x` with no closing `$`): an ordinary character.
            self.pos = start + 1;
            self.mark(start);
            return Ok(());
        }
        let delimiter = &self.src[start..=i];
        let body = i + 1;
        match self.src[body..].find(delimiter) {
            Some(len) => {
                self.pos = body + len + delimiter.len();
                self.mark(start);
                Ok(())
            }
            None => {
                let (line, column) = self.locator.locate(start);
                Err(SplitError::UnterminatedDollarQuote {
                    delimiter: delimiter.to_owned(),
                    line,
                    column,
                })
            }
        }
    }

    /// A keyword, identifier or number. Reading whole words matters: `$` inside a word
    /// (`a$$`) starts no dollar quote, and only a lone `E` before `'` makes an escape string.
    fn word(&mut self) -> Result<(), SplitError> {
        let start = self.pos;
        self.pos = ident_end(self.bytes, start, true);
        let word = &self.src[start..self.pos];
        if word.eq_ignore_ascii_case("e") && self.bytes.get(self.pos) == Some(&b'\'') {
            return self.quoted(start, true);
        }
        self.mark(start);
        if is_ident_start(self.bytes[start]) {
            self.track_routine_body(word);
        }
        Ok(())
    }

    /// psql's heuristic for SQL-standard routine bodies: in `CREATE [OR REPLACE]
    /// FUNCTION|PROCEDURE`, a `;` between BEGIN and its END does not end the statement.
    /// CASE also closes with END, so it counts once inside a BEGIN.
    fn track_routine_body(&mut self, word: &str) {
        if let Some(slot) = self.head.get_mut(self.words_seen) {
            *slot = HeadWord::parse(word);
        }
        self.words_seen += 1;
        use HeadWord::*;
        let routine = matches!(
            self.head,
            [Some(Create), Some(Routine), ..]
                | [Some(Create), Some(Or), Some(Replace), Some(Routine)]
        );
        if !routine || self.paren_depth > 0 {
            return;
        }
        let opens_block = word.eq_ignore_ascii_case("begin")
            || (word.eq_ignore_ascii_case("case") && self.begin_depth > 0);
        if opens_block {
            self.begin_depth += 1;
        } else if word.eq_ignore_ascii_case("end") {
            self.begin_depth = self.begin_depth.saturating_sub(1);
        }
    }
}

/// Turns byte offsets into line/column. Statement starts are located in increasing
/// order, so it only ever scans forward and the whole split stays linear.
struct Locator<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    column: usize,
}

impl Locator<'_> {
    fn locate(&mut self, target: usize) -> (usize, usize) {
        debug_assert!(target >= self.pos, "locations must be asked in order");
        for &b in self.bytes.get(self.pos..target).unwrap_or_default() {
            if b == b'\n' {
                self.line += 1;
                self.column = 1;
            } else if b & 0xC0 != 0x80 {
                // Count a character at its first byte only, not at continuation bytes.
                self.column += 1;
            }
        }
        self.pos = self.pos.max(target);
        (self.line, self.column)
    }
}

/// Whitespace as PostgreSQL's lexer sees it: space, tab, newline, CR, form feed and
/// vertical tab.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C)
}

/// PostgreSQL treats every non-ASCII byte as an identifier letter.
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// End of the run of identifier bytes starting at `i`; `$` belongs to identifiers but
/// not to dollar-quote tags.
fn ident_end(bytes: &[u8], mut i: usize, allow_dollar: bool) -> usize {
    while let Some(&b) = bytes.get(i) {
        let ok = is_ident_start(b) || b.is_ascii_digit() || (allow_dollar && b == b'$');
        if !ok {
            break;
        }
        i += 1;
    }
    i
}

fn starts_with_at(bytes: &[u8], i: usize, s: &[u8]) -> bool {
    bytes.get(i..).is_some_and(|rest| rest.starts_with(s))
}

/// Offset of the `\n` ending the line containing `i`, or the end of input.
fn line_end(bytes: &[u8], i: usize) -> usize {
    bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        .map_or(bytes.len(), |n| i + n)
}

/// Offset just past the `*/` closing the comment opened at `start`. Unlike the SQL
/// standard's, PostgreSQL's block comments nest.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        if starts_with_at(bytes, i, b"/*") {
            depth += 1;
            i += 2;
        } else if starts_with_at(bytes, i, b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &[(&str, usize, usize)]) {
        let actual: Vec<(&str, usize, usize)> = split(input)
            .unwrap_or_else(|e| panic!("split failed: {e}\ninput: {input:?}"))
            .iter()
            .map(|s| (s.text, s.line, s.column))
            .collect();
        assert_eq!(actual, expect, "input: {input:?}");
    }

    fn check_err(input: &str, expect: &str) {
        match split(input) {
            Ok(stmts) => panic!("expected error {expect:?}, got {stmts:?}"),
            Err(e) => assert_eq!(e.to_string(), expect, "input: {input:?}"),
        }
    }

    fn check_kinds(input: &str, expect: &[Kind]) {
        let kinds: Vec<Kind> = split(input).unwrap().iter().map(Statement::kind).collect();
        assert_eq!(kinds, expect, "input: {input:?}");
    }

    /// `expect` lists (1-based char offset in the single statement, line, column).
    fn check_position(input: &str, expect: &[(usize, usize, usize)]) {
        let stmts = split(input).unwrap();
        assert_eq!(stmts.len(), 1, "input: {input:?}");
        for &(offset, line, column) in expect {
            assert_eq!(
                position_in_script(&stmts[0], offset),
                (line, column),
                "offset {offset} in {input:?}"
            );
        }
    }

    // --- statement boundaries ---

    #[test]
    fn empty_input() {
        check("", &[]);
        check("   \n\t\n", &[]);
    }

    #[test]
    fn single_statement() {
        check("SELECT 1;", &[("SELECT 1", 1, 1)]);
    }

    #[test]
    fn trailing_statement_without_semicolon() {
        check(
            "SELECT 1; SELECT 2",
            &[("SELECT 1", 1, 1), ("SELECT 2", 1, 11)],
        );
        check("SELECT 1\n", &[("SELECT 1", 1, 1)]);
    }

    #[test]
    fn empty_statements_dropped() {
        check(";;", &[]);
        check("; ;\n;", &[]);
        check(
            "SELECT 1;;SELECT 2;",
            &[("SELECT 1", 1, 1), ("SELECT 2", 1, 11)],
        );
    }

    #[test]
    fn comment_only_statements_dropped() {
        check("-- nothing here;\n;", &[]);
        check("/* nothing; */ ;", &[]);
        check("-- only a comment", &[]);
    }

    #[test]
    fn surrounding_whitespace_trimmed() {
        check("  \n\n   SELECT 1  \n ;", &[("SELECT 1", 3, 4)]);
    }

    #[test]
    fn multi_line_statement() {
        check(
            "CREATE TABLE t (\n  a int\n);\nDROP TABLE t;",
            &[
                ("CREATE TABLE t (\n  a int\n)", 1, 1),
                ("DROP TABLE t", 4, 1),
            ],
        );
    }

    #[test]
    fn several_statements_on_one_line() {
        check(
            "SELECT 1;SELECT 2; SELECT 3;",
            &[("SELECT 1", 1, 1), ("SELECT 2", 1, 10), ("SELECT 3", 1, 20)],
        );
    }

    // --- comments ---

    #[test]
    fn leading_comments_not_part_of_statement() {
        check("-- header\nSELECT 1;", &[("SELECT 1", 2, 1)]);
        check("/* a */ /* b */ SELECT 1;", &[("SELECT 1", 1, 17)]);
    }

    #[test]
    fn trailing_comments_not_part_of_statement() {
        check("SELECT 1 -- why\n;", &[("SELECT 1", 1, 1)]);
        check("SELECT 1 /* x */;", &[("SELECT 1", 1, 1)]);
        check("SELECT 1; -- done", &[("SELECT 1", 1, 1)]);
        check("SELECT 1\n-- end of file", &[("SELECT 1", 1, 1)]);
    }

    #[test]
    fn inner_comments_kept() {
        check("SELECT /* c */ 1;", &[("SELECT /* c */ 1", 1, 1)]);
        check("SELECT -- c\n1;", &[("SELECT -- c\n1", 1, 1)]);
    }

    #[test]
    fn semicolon_in_line_comment() {
        check("SELECT 1 -- a; b\n+ 2;", &[("SELECT 1 -- a; b\n+ 2", 1, 1)]);
    }

    #[test]
    fn semicolon_in_block_comment() {
        check("SELECT /* a; b */ 1;", &[("SELECT /* a; b */ 1", 1, 1)]);
    }

    #[test]
    fn nested_block_comments() {
        check(
            "/* outer /* inner; */ still; comment */ SELECT 1;",
            &[("SELECT 1", 1, 41)],
        );
        check("/**/SELECT 1;", &[("SELECT 1", 1, 5)]);
    }

    #[test]
    fn line_comment_at_end_without_newline() {
        check("SELECT 1; --", &[("SELECT 1", 1, 1)]);
    }

    #[test]
    fn minus_and_slash_are_operators() {
        check("SELECT 4-1/2;", &[("SELECT 4-1/2", 1, 1)]);
        check("SELECT 4 - -1;", &[("SELECT 4 - -1", 1, 1)]);
    }

    // --- strings and identifiers ---

    #[test]
    fn semicolon_in_string() {
        check(
            "SELECT 'a;b'; SELECT 2;",
            &[("SELECT 'a;b'", 1, 1), ("SELECT 2", 1, 15)],
        );
    }

    #[test]
    fn doubled_quote_in_string() {
        check(
            "SELECT 'it''s;'; SELECT 2;",
            &[("SELECT 'it''s;'", 1, 1), ("SELECT 2", 1, 18)],
        );
        check("SELECT '''';", &[("SELECT ''''", 1, 1)]);
    }

    #[test]
    fn backslash_is_literal_in_standard_string() {
        check(
            "SELECT 'C:\\'; SELECT 2;",
            &[("SELECT 'C:\\'", 1, 1), ("SELECT 2", 1, 15)],
        );
    }

    #[test]
    fn escape_string() {
        check(
            "SELECT E'it\\'s;'; SELECT 2;",
            &[("SELECT E'it\\'s;'", 1, 1), ("SELECT 2", 1, 19)],
        );
        check(
            "SELECT e'\\\\'; SELECT 2;",
            &[("SELECT e'\\\\'", 1, 1), ("SELECT 2", 1, 15)],
        );
        check("SELECT E'a''b;';", &[("SELECT E'a''b;'", 1, 1)]);
    }

    #[test]
    fn e_at_end_of_word_is_not_escape_string() {
        // `name` ends in e, but only a lone E prefixes an escape string.
        check(
            "SELECT name'\\'; SELECT 2;",
            &[("SELECT name'\\'", 1, 1), ("SELECT 2", 1, 17)],
        );
    }

    #[test]
    fn other_string_prefixes() {
        check(
            "SELECT U&'d\\0061t;', B'101', X'1F', N'x;';",
            &[("SELECT U&'d\\0061t;', B'101', X'1F', N'x;'", 1, 1)],
        );
    }

    #[test]
    fn comment_markers_in_string() {
        check(
            "SELECT '--'; SELECT '/*';",
            &[("SELECT '--'", 1, 1), ("SELECT '/*'", 1, 14)],
        );
    }

    #[test]
    fn multi_line_string() {
        check(
            "SELECT 'a\n;b';\nSELECT 2;",
            &[("SELECT 'a\n;b'", 1, 1), ("SELECT 2", 3, 1)],
        );
    }

    #[test]
    fn quoted_identifier() {
        check(
            "SELECT 1 AS \"a;b\"; SELECT 2;",
            &[("SELECT 1 AS \"a;b\"", 1, 1), ("SELECT 2", 1, 20)],
        );
        check(
            "SELECT 1 AS \"a\"\";\"; SELECT 2;",
            &[("SELECT 1 AS \"a\"\";\"", 1, 1), ("SELECT 2", 1, 21)],
        );
        check(
            "SELECT 1 AS \"it's\"; SELECT 2;",
            &[("SELECT 1 AS \"it's\"", 1, 1), ("SELECT 2", 1, 21)],
        );
    }

    #[test]
    fn string_starts_statement() {
        check("'x'; \"y\";", &[("'x'", 1, 1), ("\"y\"", 1, 6)]);
    }

    // --- dollar quoting ---

    #[test]
    fn dollar_quoted_string() {
        check(
            "SELECT $$a;b$$; SELECT 2;",
            &[("SELECT $$a;b$$", 1, 1), ("SELECT 2", 1, 17)],
        );
    }

    #[test]
    fn tagged_dollar_quoted_string() {
        check(
            "SELECT $body$ $$; ' \" -- /* $body$; SELECT 2;",
            &[
                ("SELECT $body$ $$; ' \" -- /* $body$", 1, 1),
                ("SELECT 2", 1, 37),
            ],
        );
    }

    #[test]
    fn dollar_tags_must_match_exactly() {
        check(
            "SELECT $a$ $b$; $A$; $a$; SELECT 2;",
            &[("SELECT $a$ $b$; $A$; $a$", 1, 1), ("SELECT 2", 1, 27)],
        );
    }

    #[test]
    fn nested_dollar_quotes() {
        check(
            "SELECT $outer$ $inner$ ; $inner$ $outer$;",
            &[("SELECT $outer$ $inner$ ; $inner$ $outer$", 1, 1)],
        );
    }

    #[test]
    fn dollar_parameters_are_not_quotes() {
        check(
            "PREPARE p AS SELECT $1 + $2; EXECUTE p(1, 2);",
            &[
                ("PREPARE p AS SELECT $1 + $2", 1, 1),
                ("EXECUTE p(1, 2)", 1, 30),
            ],
        );
        check("SELECT $1$;", &[("SELECT $1$", 1, 1)]);
    }

    #[test]
    fn dollar_inside_identifier_is_not_a_quote() {
        check(
            "SELECT a$$b; SELECT 2;",
            &[("SELECT a$$b", 1, 1), ("SELECT 2", 1, 14)],
        );
    }

    #[test]
    fn dollar_tag_cannot_start_with_digit() {
        check(
            "SELECT $1a$; SELECT 2;",
            &[("SELECT $1a$", 1, 1), ("SELECT 2", 1, 14)],
        );
        check("SELECT $_1$;$_1$;", &[("SELECT $_1$;$_1$", 1, 1)]);
    }

    #[test]
    fn lone_dollar() {
        check(
            "SELECT $; SELECT $x;",
            &[("SELECT $", 1, 1), ("SELECT $x", 1, 11)],
        );
    }

    #[test]
    fn non_ascii_dollar_tag() {
        check("SELECT $é$;$é$;", &[("SELECT $é$;$é$", 1, 1)]);
    }

    // --- parentheses and routine bodies (psql heuristics) ---

    #[test]
    fn semicolon_inside_parentheses() {
        check(
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1;",
            &[
                (
                    "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))",
                    1,
                    1,
                ),
                ("SELECT 1", 1, 95),
            ],
        );
    }

    #[test]
    fn unbalanced_close_paren_does_not_underflow() {
        check(
            "SELECT 1); SELECT 2;",
            &[("SELECT 1)", 1, 1), ("SELECT 2", 1, 12)],
        );
    }

    #[test]
    fn begin_atomic_body() {
        check(
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\nSELECT 3;",
            &[
                (
                    "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND",
                    1,
                    1,
                ),
                ("SELECT 3", 6, 1),
            ],
        );
    }

    #[test]
    fn begin_atomic_body_with_case() {
        check(
            "create or replace procedure p() begin atomic select case when true then 1 end; end; select 3;",
            &[
                (
                    "create or replace procedure p() begin atomic select case when true then 1 end; end",
                    1,
                    1,
                ),
                ("select 3", 1, 85),
            ],
        );
    }

    #[test]
    fn begin_outside_routine_is_not_tracked() {
        check(
            "BEGIN; SELECT 1; END;",
            &[("BEGIN", 1, 1), ("SELECT 1", 1, 8), ("END", 1, 18)],
        );
        check(
            "CREATE TABLE begin (a int); SELECT 1;",
            &[("CREATE TABLE begin (a int)", 1, 1), ("SELECT 1", 1, 29)],
        );
    }

    #[test]
    fn case_in_plain_statement() {
        check(
            "SELECT CASE WHEN x THEN 1 END; SELECT 2;",
            &[("SELECT CASE WHEN x THEN 1 END", 1, 1), ("SELECT 2", 1, 32)],
        );
    }

    // --- psql meta-commands ---

    #[test]
    fn psql_meta_runs_to_end_of_line() {
        check(
            "\\set ON_ERROR_STOP on\nSELECT 1;",
            &[("\\set ON_ERROR_STOP on", 1, 1), ("SELECT 1", 2, 1)],
        );
        check(
            "\\c db; SELECT 1\nSELECT 2;",
            &[("\\c db; SELECT 1", 1, 1), ("SELECT 2", 2, 1)],
        );
    }

    #[test]
    fn psql_meta_after_statement_on_same_line() {
        check(
            "SELECT 1; \\i other.sql\n",
            &[("SELECT 1", 1, 1), ("\\i other.sql", 1, 11)],
        );
    }

    #[test]
    fn psql_meta_at_end_of_file_and_crlf() {
        check("\\i a.sql", &[("\\i a.sql", 1, 1)]);
        check(
            "\\i a.sql\r\nSELECT 1;\r\n",
            &[("\\i a.sql", 1, 1), ("SELECT 1", 2, 1)],
        );
    }

    #[test]
    fn backslash_inside_statement_is_not_meta() {
        check("SELECT 1 \\\n;", &[("SELECT 1 \\", 1, 1)]);
    }

    // --- positions ---

    #[test]
    fn crlf_line_endings() {
        check(
            "SELECT 1;\r\n\r\n  SELECT\r\n  2;\r\n",
            &[("SELECT 1", 1, 1), ("SELECT\r\n  2", 3, 3)],
        );
    }

    #[test]
    fn columns_count_characters() {
        check(
            "SELECT 'héllo'; SELECT 2;",
            &[("SELECT 'héllo'", 1, 1), ("SELECT 2", 1, 17)],
        );
        check("/* 日本語 */ SELECT 1;", &[("SELECT 1", 1, 11)]);
    }

    #[test]
    fn non_ascii_identifiers() {
        check(
            "SELECT ÿ, 名前 FROM tëst; SELECT 2;",
            &[("SELECT ÿ, 名前 FROM tëst", 1, 1), ("SELECT 2", 1, 25)],
        );
    }

    #[test]
    fn tabs_count_as_one_column() {
        check("\tSELECT 1;", &[("SELECT 1", 1, 2)]);
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        check(
            "\u{feff}SELECT 1; SELECT 2;",
            &[("SELECT 1", 1, 1), ("SELECT 2", 1, 11)],
        );
    }

    // --- errors ---

    #[test]
    fn unterminated_string() {
        check_err(
            "SELECT 1;\nSELECT 'abc;",
            "unterminated single-quoted string starting at line 2, column 8",
        );
        check_err(
            "SELECT 'it''s",
            "unterminated single-quoted string starting at line 1, column 8",
        );
    }

    #[test]
    fn unterminated_escape_string() {
        check_err(
            "SELECT E'abc\\'",
            "unterminated single-quoted string starting at line 1, column 8",
        );
    }

    #[test]
    fn unterminated_quoted_identifier() {
        check_err(
            "SELECT 1 AS \"abc",
            "unterminated quoted identifier starting at line 1, column 13",
        );
    }

    #[test]
    fn unterminated_dollar_quote() {
        check_err(
            "SELECT 1;\n\nCREATE FUNCTION f() RETURNS int AS\n    $body$ SELECT 1; $bod$;",
            "unterminated dollar-quoted string $body$ starting at line 4, column 5",
        );
        check_err(
            "SELECT $$abc",
            "unterminated dollar-quoted string $$ starting at line 1, column 8",
        );
    }

    #[test]
    fn unterminated_block_comment() {
        check_err(
            "SELECT 1; /* abc",
            "unterminated block comment starting at line 1, column 11",
        );
        check_err(
            "/* a /* b */ still open",
            "unterminated block comment starting at line 1, column 1",
        );
        check_err(
            "/*/",
            "unterminated block comment starting at line 1, column 1",
        );
    }

    #[test]
    fn error_positions_count_characters() {
        check_err(
            "SELECT 'é', 'x",
            "unterminated single-quoted string starting at line 1, column 13",
        );
    }

    #[test]
    fn error_accessors() {
        let err = split("\n  'x").unwrap_err();
        assert_eq!((err.line(), err.column()), (2, 3));
        let err = split("$t$").unwrap_err();
        assert_eq!(
            err,
            SplitError::UnterminatedDollarQuote {
                delimiter: "$t$".to_owned(),
                line: 1,
                column: 1
            }
        );
    }

    // --- kinds ---

    #[test]
    fn kinds() {
        check_kinds(
            "begin; START TRANSACTION; Commit; END; ROLLBACK; ABORT; SELECT 1; \\c db",
            &[
                Kind::TransactionControl,
                Kind::TransactionControl,
                Kind::TransactionControl,
                Kind::TransactionControl,
                Kind::TransactionControl,
                Kind::TransactionControl,
                Kind::Sql,
                Kind::PsqlMeta,
            ],
        );
    }

    #[test]
    fn transaction_control_with_options() {
        check_kinds(
            "BEGIN ISOLATION LEVEL SERIALIZABLE; BEGIN WORK; COMMIT AND CHAIN; ROLLBACK TRANSACTION; START /* c */ TRANSACTION READ ONLY;",
            &[Kind::TransactionControl; 5],
        );
    }

    #[test]
    fn transaction_like_statements_that_must_run() {
        check_kinds(
            "ROLLBACK TO SAVEPOINT a; ROLLBACK WORK TO a; COMMIT PREPARED 'x'; ROLLBACK PREPARED 'x'; SAVEPOINT a; RELEASE a; START; BEGIN ATOMIC",
            &[Kind::Sql; 8],
        );
    }

    #[test]
    fn kind_ignores_words_inside_statements() {
        check_kinds(
            "SELECT 'BEGIN'; \"begin\"; begin_date; -- commit\nVALUES (1)",
            &[Kind::Sql; 4],
        );
    }

    #[test]
    fn kind_of_handmade_statement() {
        let stmt = Statement {
            text: "  -- lead\n/* c */ commit",
            line: 1,
            column: 1,
        };
        assert_eq!(stmt.kind(), Kind::TransactionControl);
    }

    // --- position_in_script ---

    #[test]
    fn position_on_first_line() {
        check_position("  SELECT foo;", &[(1, 1, 3), (8, 1, 10)]);
    }

    #[test]
    fn position_on_later_lines() {
        check_position(
            "\n\nSELECT a,\n       bogus\nFROM t;",
            &[(11, 4, 1), (18, 4, 8), (24, 5, 1)],
        );
    }

    #[test]
    fn position_counts_characters() {
        check_position("SELECT 'é✓', x;", &[(14, 1, 14)]);
        check_position("/* ü */ SELECT 'é',\n  ñ;", &[(1, 1, 9), (15, 2, 3)]);
    }

    #[test]
    fn position_with_crlf() {
        // PostgreSQL counts the \r as a character of the query text.
        check_position("SELECT 1,\r\n  x;", &[(14, 2, 3)]);
    }

    #[test]
    fn position_past_end_and_zero() {
        check_position("SELECT (", &[(9, 1, 9), (0, 1, 1)]);
    }

    // --- a realistic script ---

    const SCRIPT: &str = r#"-- Sales reporting schema; partitioned by month.
/* Run with: clue create-schema --source schema.sql;
   /* nested: keep this; */ */

CREATE TABLE sales_report (
    sale_id SERIAL,
    product_id INT NOT NULL,
    product_name VARCHAR(255) NOT NULL,
    region VARCHAR(100) NOT NULL,
    sales_date DATE NOT NULL,
    quantity_sold INT NOT NULL,
    sales_amount DECIMAL(10, 2) NOT NULL,
    unit_price DECIMAL(10, 2) NOT NULL,
    PRIMARY KEY (sales_date, sale_id)
) PARTITION BY RANGE (sales_date);

CREATE TABLE sales_report_2024_01 PARTITION OF sales_report
    FOR VALUES FROM ('2024-01-01') TO ('2024-02-01'); -- January; more later

COMMENT ON TABLE sales_report IS 'Sales -- not a comment; really';

CREATE OR REPLACE FUNCTION record_sale(p_product INT, p_qty INT)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_price DECIMAL(10, 2);
BEGIN
    -- look up the price; fail loudly if missing
    SELECT unit_price INTO v_price FROM products WHERE id = p_product;
    IF v_price IS NULL THEN
        RAISE EXCEPTION 'no price for product %; check ''products''', p_product;
    END IF;
    INSERT INTO sales_report (product_id, product_name, region, sales_date,
                              quantity_sold, sales_amount, unit_price)
    VALUES (p_product, 'n/a', 'EU', CURRENT_DATE, p_qty, v_price * p_qty, v_price);
END;
$$;

SELECT record_sale(1, 2)
"#;

    #[test]
    fn realistic_script() {
        let stmts = split(SCRIPT).unwrap();
        let heads: Vec<(&str, usize, usize)> = stmts
            .iter()
            .map(|s| (s.text.lines().next().unwrap_or(""), s.line, s.column))
            .collect();
        assert_eq!(
            heads,
            [
                ("CREATE TABLE sales_report (", 5, 1),
                (
                    "CREATE TABLE sales_report_2024_01 PARTITION OF sales_report",
                    17,
                    1
                ),
                (
                    "COMMENT ON TABLE sales_report IS 'Sales -- not a comment; really'",
                    20,
                    1
                ),
                (
                    "CREATE OR REPLACE FUNCTION record_sale(p_product INT, p_qty INT)",
                    22,
                    1
                ),
                ("SELECT record_sale(1, 2)", 40, 1),
            ]
        );
        assert!(stmts[0].text.ends_with(") PARTITION BY RANGE (sales_date)"));
        assert!(stmts[1].text.ends_with("TO ('2024-02-01')"));
        assert!(stmts[3].text.ends_with("END;\n$$"));
        assert!(stmts.iter().all(|s| s.kind() == Kind::Sql));
        // The server would report `products` in the function's SELECT relative to the
        // CREATE FUNCTION text; it must map back to its place in the file.
        let create_fn = &stmts[3];
        let offset = create_fn
            .text
            .find("products")
            .map(|b| create_fn.text[..b].chars().count() + 1);
        assert_eq!(
            offset.map(|o| position_in_script(create_fn, o)),
            Some((30, 41))
        );
    }

    #[test]
    fn realistic_script_with_crlf() {
        let crlf = SCRIPT.replace('\n', "\r\n");
        let lf: Vec<(usize, usize)> = split(SCRIPT)
            .unwrap()
            .iter()
            .map(|s| (s.line, s.column))
            .collect();
        let cr: Vec<(usize, usize)> = split(&crlf)
            .unwrap()
            .iter()
            .map(|s| (s.line, s.column))
            .collect();
        assert_eq!(lf, cr);
    }

    #[test]
    fn realistic_script_with_transaction_wrapper() {
        let wrapped = format!("BEGIN;\n{SCRIPT};\nCOMMIT;\n");
        let kinds: Vec<Kind> = split(&wrapped)
            .unwrap()
            .iter()
            .map(Statement::kind)
            .collect();
        assert_eq!(
            kinds,
            [
                Kind::TransactionControl,
                Kind::Sql,
                Kind::Sql,
                Kind::Sql,
                Kind::Sql,
                Kind::Sql,
                Kind::TransactionControl
            ]
        );
    }
}
