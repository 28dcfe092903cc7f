//! Attestation conditions: CEL expressions (cel-rust) over a verified
//! in-toto statement — `statement`, `predicate`, `predicateType`,
//! `subject` — and `now`, the time of the review. Checked when the policy
//! loads: syntax, names, functions and the plain type errors, each with
//! its position; and bounded: the source's length, the statement's size
//! (`statement::MAX_STATEMENT`), and the cost of evaluating the
//! expression over the largest statement, estimated from its shape (the
//! way Kubernetes bounds its own CEL), so that no expression that could
//! run long is ever run. Pure: a statement and a time in, true, false or
//! an error out.

use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::value::{CowVal, Val};

use crate::verify::statement::{MAX_STATEMENT, Needs, Statement};

/// A condition longer than this is refused.
pub const MAX_SOURCE: usize = 4096;
/// The estimated cost allowed, in units of one node evaluated or 16 bytes
/// compared or copied (about 30 ns each on the 2-core VM of bench/): ten
/// million is a few hundred milliseconds of one core at worst, for a
/// statement of the largest size an accepted signer signed.
pub const MAX_COST: f64 = 1e7;
/// What an error message quotes of a value, at most.
const MAX_QUOTED: usize = 200;
/// A regex compiled at each call is this many units (measured: ~30 µs).
const REGEX_COST: f64 = 300.0;

/// A compiled condition.
pub struct Condition {
    source: String,
    program: cel::Program,
    /// Its estimated worst cost, for reports.
    pub cost: f64,
    /// Whether it reads `now`: its verdict can change with time alone, so
    /// it is evaluated again at each review.
    pub uses_now: bool,
    /// Which of the statement's values it reads.
    pub needs: Needs,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

/// The names a condition may use, their types and sizes.
const STATEMENT: &str = "statement";
const PREDICATE: &str = "predicate";
const PREDICATE_TYPE: &str = "predicateType";
const SUBJECT: &str = "subject";
const NOW: &str = "now";

/// The standard environment, built once.
fn env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

impl Condition {
    /// Compiles and checks `source`.
    pub fn compile(source: &str) -> Result<Condition, String> {
        if source.len() > MAX_SOURCE {
            return Err(format!(
                "the condition is {} bytes long, more than {MAX_SOURCE}",
                source.len()
            ));
        }
        let program = cel::Program::compile(source).map_err(|e| {
            let text = e.to_string();
            // cel-rust: "ERROR: <input>:L:C: message\n| source\n| ..^"
            let first = text.lines().next().unwrap_or(&text);
            let first = first.trim_start_matches("ERROR: <input>:");
            format!("the condition does not parse: at {first}")
        })?;
        let mut checker = Checker {
            source,
            program: &program,
            scope: Vec::new(),
            level: 0,
            uses_now: false,
            needs: Needs::default(),
        };
        let est = checker.estimate(program.expression())?;
        let uses_now = checker.uses_now;
        let needs = checker.needs;
        if !matches!(est.ty, Ty::Bool | Ty::Dyn) {
            return Err(format!(
                "the condition gives a {}, not a boolean",
                est.ty.name()
            ));
        }
        let cost = est.cost + est.elem;
        if cost.is_nan() || cost > MAX_COST {
            return Err(format!(
                "the condition could cost about {:.0} units over a statement of {MAX_STATEMENT} bytes, more than the {MAX_COST:.0} allowed (a comprehension over statement values nested in another, or copying them in a loop): write it with fewer nested loops",
                cost
            ));
        }
        Ok(Condition {
            source: source.to_string(),
            program,
            cost,
            uses_now,
            needs,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the condition holds for `statement` at `now` (Unix
    /// seconds): an error when it does not evaluate, or gives a
    /// non-boolean.
    pub fn holds(&self, statement: &Statement, now: i64) -> Result<bool, String> {
        let now = chrono::DateTime::from_timestamp(now, 0)
            .ok_or("the review's time is out of range")?
            .fixed_offset();
        let vars = Vars {
            statement,
            now: cel::Value::Timestamp(now)
                .try_into()
                .map_err(|e: cel::ExecutionError| e.to_string())?,
        };
        let mut ctx = cel::Context::with_env(env());
        ctx.set_variable_resolver(&vars);
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "it gives {}, not a boolean",
                quoted(&format!("{other:?}"))
            )),
            Err(e) => Err(quoted(&e.to_string())),
        }
    }
}

/// A message cut to [`MAX_QUOTED`] characters.
fn quoted(s: &str) -> String {
    crate::verify::clipped(s, MAX_QUOTED)
}

/// The variables of one evaluation, borrowed from the statement.
struct Vars<'a> {
    statement: &'a Statement,
    now: Box<dyn Val>,
}

impl cel::context::VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let v: &'b dyn Val = match variable {
            STATEMENT => self.statement.statement.as_deref()?,
            PREDICATE => self.statement.predicate.as_deref()?,
            PREDICATE_TYPE => &*self.statement.predicate_type_val,
            SUBJECT => self.statement.subject.as_deref()?,
            NOW => &*self.now,
            _ => return None,
        };
        Some(CowVal::Borrowed(v))
    }
}

/// What the checker knows of a value's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Int,
    Double,
    Str,
    Bytes,
    Timestamp,
    Duration,
    List,
    Map,
    Null,
    Type,
    Dyn,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Double => "double",
            Ty::Str => "string",
            Ty::Bytes => "bytes",
            Ty::Timestamp => "timestamp",
            Ty::Duration => "duration",
            Ty::List => "list",
            Ty::Map => "map",
            Ty::Null => "null",
            Ty::Type => "type",
            Ty::Dyn => "value",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Double)
    }

    /// Whether two types may meet in a comparison.
    fn comparable(a: Ty, b: Ty) -> bool {
        a == Ty::Dyn || b == Ty::Dyn || a == b || (a.numeric() && b.numeric())
    }
}

/// Bytes of a string compared or copied per unit of cost.
const BYTES_PER_UNIT: f64 = 16.0;
/// Bytes per value of anything else (a list, a map, a value of unknown
/// type): each value of a JSON structure takes at least two bytes, and
/// copying, converting or comparing it visits each (cel-rust copies a
/// value into a literal, and converts both operands of a failed
/// comparison or arithmetic into its error).
const BYTES_PER_VALUE: f64 = 2.0;

/// Bytes per unit of work over a value of type `ty`.
fn rate(ty: Ty) -> f64 {
    match ty {
        Ty::Str | Ty::Bytes => BYTES_PER_UNIT,
        _ => BYTES_PER_VALUE,
    }
}

/// An upper bound on an expression's cost, on its value's size (the bytes
/// of a string or of a value's JSON; a list's elements, a map's entries
/// are fewer than half that), and its type.
///
/// Inside a loop, a value taken from the innermost loop's element is
/// `linear`: the elements of one list add up to no more than the list, so
/// work proportional to an element's size is counted in `elem`, once per
/// loop, not in `cost`, once per element (a loop over a list's strings
/// that checks each with `contains` costs the list's bytes, not the
/// bytes times the elements).
#[derive(Debug, Clone, Copy)]
struct Est {
    cost: f64,
    elem: f64,
    size: f64,
    ty: Ty,
    linear: bool,
}

impl Est {
    fn of(ty: Ty) -> Est {
        Est {
            cost: 1.0,
            elem: 0.0,
            size: 1.0,
            ty,
            linear: false,
        }
    }

    /// Work over `bytes` of `operand`: per loop when the operand is the
    /// loop's element, per evaluation otherwise.
    fn scan(&mut self, operand: &Est, bytes: f64) {
        let units = bytes / rate(operand.ty);
        if operand.linear {
            self.elem += units;
        } else {
            self.cost += units;
        }
    }

    /// Work over the whole of each operand.
    fn scan_all(&mut self, operands: &[Est]) {
        for o in operands {
            self.scan(o, o.size);
        }
    }
}

/// A comprehension variable in scope.
struct Var {
    name: String,
    size: f64,
    ty: Ty,
    /// The loop level it belongs to, and whether it is the loop's element
    /// (not its accumulator).
    level: usize,
    element: bool,
}

struct Checker<'a> {
    source: &'a str,
    program: &'a cel::Program,
    scope: Vec<Var>,
    /// Loops entered.
    level: usize,
    uses_now: bool,
    needs: Needs,
}

impl Checker<'_> {
    /// `line:column` of a node, for messages.
    fn at(&self, e: &IdedExpr) -> String {
        match self.program.source_info().offset_for(e.id) {
            Some((start, _)) => {
                let start = start as usize;
                let before = self.source.get(..start).unwrap_or(self.source);
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                format!("{line}:{col}")
            }
            None => "?".into(),
        }
    }

    fn error(&self, e: &IdedExpr, what: String) -> String {
        format!("the condition is not valid: at {}: {what}", self.at(e))
    }

    /// The written length of a node (a bound on a literal's size).
    fn written(&self, e: &IdedExpr) -> f64 {
        match self.program.source_info().offset_for(e.id) {
            Some((start, stop)) => f64::from(stop.saturating_sub(start)) + 1.0,
            None => MAX_SOURCE as f64,
        }
    }

    fn estimate(&mut self, e: &IdedExpr) -> Result<Est, String> {
        let input = MAX_STATEMENT as f64;
        match &e.expr {
            Expr::Ident(name) => {
                if let Some(v) = self.scope.iter().rev().find(|v| v.name == *name) {
                    return Ok(Est {
                        size: v.size,
                        ty: v.ty,
                        linear: v.element && v.level == self.level,
                        ..Est::of(v.ty)
                    });
                }
                let ty = match name.as_str() {
                    STATEMENT => {
                        self.needs.statement = true;
                        Ty::Map
                    }
                    PREDICATE => {
                        self.needs.predicate = true;
                        Ty::Dyn
                    }
                    PREDICATE_TYPE => Ty::Str,
                    SUBJECT => {
                        self.needs.subject = true;
                        Ty::List
                    }
                    NOW => {
                        self.uses_now = true;
                        return Ok(Est::of(Ty::Timestamp));
                    }
                    _ => {
                        return Err(self.error(
                            e,
                            format!(
                                "unknown name {name:?} (a condition sees statement, predicate, predicateType, subject and now)"
                            ),
                        ));
                    }
                };
                Ok(Est {
                    size: input,
                    ..Est::of(ty)
                })
            }
            Expr::Literal(l) => {
                let ty = match l {
                    LiteralValue::Boolean(_) => Ty::Bool,
                    LiteralValue::Int(_) | LiteralValue::UInt(_) => Ty::Int,
                    LiteralValue::Double(_) => Ty::Double,
                    LiteralValue::String(_) => Ty::Str,
                    LiteralValue::Bytes(_) => Ty::Bytes,
                    LiteralValue::Null => Ty::Null,
                };
                Ok(Est {
                    size: self.written(e),
                    ..Est::of(ty)
                })
            }
            Expr::List(l) => {
                // A list of the loop's element (what `map` appends) is as
                // linear as the element.
                let mut out = Est {
                    linear: !l.elements.is_empty(),
                    ..Est::of(Ty::List)
                };
                for x in &l.elements {
                    let x = self.estimate(x)?;
                    out.cost += x.cost + 1.0;
                    out.elem += x.elem;
                    out.size += x.size + 1.0;
                    out.linear &= x.linear;
                    // Each element is copied into the list.
                    out.scan(&x, x.size);
                }
                Ok(out)
            }
            Expr::Map(m) => {
                let mut out = Est::of(Ty::Map);
                for entry in &m.entries {
                    let EntryExpr::MapEntry(me) = &entry.expr else {
                        return Err(self.error(e, "a struct field in a map".into()));
                    };
                    if me.optional {
                        return Err(self.error(e, "optional entries are not supported".into()));
                    }
                    for x in [&me.key, &me.value] {
                        let x = self.estimate(x)?;
                        out.cost += x.cost + 1.0;
                        out.elem += x.elem;
                        out.size += x.size + 1.0;
                        out.scan(&x, x.size);
                    }
                }
                Ok(out)
            }
            Expr::Struct(_) => Err(self.error(e, "message literals are not supported".into())),
            Expr::Unspecified => Err(self.error(e, "an empty expression".into())),
            Expr::Select(s) => {
                let operand = self.estimate(&s.operand)?;
                if !matches!(operand.ty, Ty::Map | Ty::Dyn) {
                    return Err(self.error(
                        e,
                        format!("a field ({:?}) of a {}", s.field, operand.ty.name()),
                    ));
                }
                Ok(Est {
                    cost: operand.cost + 1.0,
                    ty: if s.test { Ty::Bool } else { Ty::Dyn },
                    ..operand
                })
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Call(call) => self.call(e, call),
        }
    }

    /// A loop (`all`, `exists`, `exists_one`, `map`, `filter`): its body
    /// once per element, what the body does with the element's bytes once
    /// per loop. A loop over a value of an enclosing loop's element is
    /// itself linear in that element: counted once per enclosing loop.
    fn comprehension(&mut self, c: &cel::common::ast::ComprehensionExpr) -> Result<Est, String> {
        let range = self.estimate(&c.iter_range)?;
        if !matches!(range.ty, Ty::List | Ty::Map | Ty::Dyn) {
            return Err(self.error(&c.iter_range, format!("a loop over a {}", range.ty.name())));
        }
        // No more elements than values a statement may hold.
        let elements = (range.size / 2.0)
            .ceil()
            .clamp(1.0, crate::verify::statement::MAX_VALUES as f64);
        let init = self.estimate(&c.accu_init)?;
        let depth = self.scope.len();
        self.level += 1;
        let level = self.level;
        for name in std::iter::once(&c.iter_var).chain(c.iter_var2.as_ref()) {
            self.scope.push(Var {
                name: name.clone(),
                size: range.size,
                ty: Ty::Dyn,
                level,
                element: true,
            });
        }
        // The accumulator: once at its initial size, to learn how much
        // each step adds to it, then at its largest.
        self.scope.push(Var {
            name: c.accu_var.clone(),
            size: init.size,
            ty: init.ty,
            level,
            element: false,
        });
        let first = self.step(c)?;
        let growth = (first.size - init.size).max(0.0);
        if let Some(accu) = self.scope.last_mut() {
            accu.size = init.size + elements * growth;
        }
        let cond = self.estimate(&c.loop_cond)?;
        let step = self.step(c)?;
        let result = self.estimate(&c.result)?;
        self.scope.truncate(depth);
        self.level -= 1;
        let per_element = cond.cost + step.cost + 1.0;
        let body = (elements - 1.0) * per_element + cond.elem + step.elem;
        let mut out = Est {
            cost: range.cost + init.cost + result.cost + per_element,
            elem: range.elem + init.elem + result.elem,
            size: result.size,
            ty: result.ty,
            linear: false,
        };
        if range.linear {
            out.elem += body;
        } else {
            out.cost += body;
        }
        Ok(out)
    }

    /// A loop's step, where appending to the accumulator (what `map` and
    /// `filter` do) costs what is appended, not a copy of the
    /// accumulator: cel-rust appends in place.
    fn step(&mut self, c: &cel::common::ast::ComprehensionExpr) -> Result<Est, String> {
        let mut est = self.estimate(&c.loop_step)?;
        let accu = self.scope.last().map_or(0.0, |v| v.size / rate(v.ty));
        let appends = appends_to(&c.loop_step, &c.accu_var) as f64;
        est.cost = (est.cost - appends * accu).max(1.0);
        Ok(est)
    }

    fn call(&mut self, e: &IdedExpr, call: &cel::common::ast::CallExpr) -> Result<Est, String> {
        let name = call.func_name.as_str();
        let mut ops = Vec::new();
        if let Some(t) = &call.target {
            ops.push(self.estimate(t)?);
        }
        for a in &call.args {
            ops.push(self.estimate(a)?);
        }
        let mut out = Est::of(Ty::Bool);
        for o in &ops {
            out.cost += o.cost;
            out.elem += o.elem;
        }
        let tys: Vec<Ty> = ops.iter().map(|o| o.ty).collect();
        if let Some(n) = arity(name)
            && ops.len() != n
        {
            return Err(self.error(e, format!("{name} takes {n} arguments, not {}", ops.len())));
        }
        let fail = |what: String| Err(self.error(e, what));
        match name {
            "_&&_" | "_||_" | "!_" | "@not_strictly_false" => {
                if let Some(t) = tys.iter().find(|t| !matches!(t, Ty::Bool | Ty::Dyn)) {
                    return fail(format!("a logical operator on a {}", t.name()));
                }
            }
            "_?_:_" => {
                if !matches!(tys[0], Ty::Bool | Ty::Dyn) {
                    return fail(format!("a condition that is a {}", tys[0].name()));
                }
                out.ty = if tys[1] == tys[2] { tys[1] } else { Ty::Dyn };
                out.size = ops[1].size.max(ops[2].size);
            }
            "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" => {
                let ordered = !matches!(name, "_==_" | "_!=_");
                let unordered = |t: &Ty| matches!(t, Ty::Bool | Ty::List | Ty::Map | Ty::Null);
                if !(Ty::comparable(tys[0], tys[1]) || (!ordered && tys.contains(&Ty::Null)))
                    || (ordered && tys.iter().any(unordered))
                {
                    let how = if ordered {
                        "ordered against"
                    } else {
                        "compared with"
                    };
                    return fail(format!("a {} {how} a {}", tys[0].name(), tys[1].name()));
                }
                if ordered {
                    // Operands that cannot be ordered are converted, whole,
                    // into the error.
                    out.scan_all(&ops);
                } else {
                    let bytes = ops[0].size.min(ops[1].size);
                    let by = if ops[0].linear { &ops[0] } else { &ops[1] };
                    out.scan(by, bytes);
                }
            }
            "_+_" => {
                out.ty = match (tys[0], tys[1]) {
                    (Ty::Dyn, _) | (_, Ty::Dyn) => Ty::Dyn,
                    (a, b)
                        if a == b && matches!(a, Ty::Str | Ty::Bytes | Ty::List | Ty::Duration) =>
                    {
                        a
                    }
                    (a, b) if a.numeric() && a == b => a,
                    (Ty::Timestamp, Ty::Duration) | (Ty::Duration, Ty::Timestamp) => Ty::Timestamp,
                    (a, b) => return fail(format!("a {} added to a {}", a.name(), b.name())),
                };
                out.size = ops[0].size + ops[1].size;
                for o in &ops {
                    out.scan(o, o.size);
                }
            }
            "_-_" => {
                out.ty = match (tys[0], tys[1]) {
                    (Ty::Dyn, _) | (_, Ty::Dyn) => Ty::Dyn,
                    (Ty::Timestamp, Ty::Timestamp) => Ty::Duration,
                    (Ty::Timestamp, Ty::Duration) => Ty::Timestamp,
                    (Ty::Duration, Ty::Duration) => Ty::Duration,
                    (a, b) if a.numeric() && a == b => a,
                    (a, b) => return fail(format!("a {} taken from a {}", b.name(), a.name())),
                };
                out.scan_all(&ops);
            }
            "_*_" | "_/_" | "_%_" | "-_" => {
                if let Some(t) = tys
                    .iter()
                    .find(|t| !matches!(t, Ty::Int | Ty::Double | Ty::Dyn))
                {
                    return fail(format!("arithmetic on a {}", t.name()));
                }
                out.ty = tys[0];
                out.scan_all(&ops);
            }
            "_[_]" => {
                if !matches!(tys[0], Ty::List | Ty::Map | Ty::Dyn) {
                    return fail(format!("an index into a {}", tys[0].name()));
                }
                out.scan(&ops[1], ops[1].size);
                out.ty = Ty::Dyn;
                out.size = ops[0].size;
                out.linear = ops[0].linear;
            }
            "@in" => {
                if !matches!(tys[1], Ty::List | Ty::Map | Ty::Dyn) {
                    return fail(format!("`in` a {}", tys[1].name()));
                }
                // Each element visited and compared: the elements are no
                // more than the list's bytes, their comparisons no more
                // than its bytes either.
                out.scan(&ops[1], 2.0 * ops[1].size);
                out.scan(&ops[0], ops[0].size);
            }
            "size" => {
                // A string's characters are counted (a list's, a map's
                // entries are not: their size is kept).
                out.ty = Ty::Int;
                for o in ops.iter().filter(|o| matches!(o.ty, Ty::Str | Ty::Dyn)) {
                    out.scan(&Est { ty: Ty::Str, ..*o }, o.size);
                }
            }
            "contains" | "startsWith" | "endsWith" => {
                if let Some(t) = tys.iter().find(|t| !matches!(t, Ty::Str | Ty::Dyn)) {
                    return fail(format!("{name} on a {}", t.name()));
                }
                // A target that is not a string is converted into the
                // error: the whole of each operand, whatever the function.
                out.scan_all(&ops);
            }
            "matches" => {
                let pattern = call.args.last().map(|p| &p.expr);
                let Some(Expr::Literal(LiteralValue::String(p))) = pattern else {
                    return fail(
                        "matches takes a regular expression written in the condition".into(),
                    );
                };
                let p: &str = p.as_ref();
                if let Err(why) = regex::Regex::new(p) {
                    return fail(format!("{p:?} is not a regular expression: {why}"));
                }
                // Compiled at each call; matching is linear in the text
                // times the pattern at worst.
                let written = p.len() as f64;
                out.cost += REGEX_COST * (1.0 + written / 64.0);
                out.scan(&ops[0], ops[0].size * (1.0 + written / 8.0));
            }
            "timestamp" | "duration" => {
                let ok = match name {
                    "timestamp" => matches!(tys[0], Ty::Str | Ty::Int | Ty::Timestamp | Ty::Dyn),
                    _ => matches!(tys[0], Ty::Str | Ty::Duration | Ty::Dyn),
                };
                if !ok {
                    return fail(format!("{name} of a {}", tys[0].name()));
                }
                // A literal is checked now: a typo would refuse every image.
                if let Some(Expr::Literal(_)) = call.args.first().map(|a| &a.expr) {
                    let ctx = cel::Context::with_env(env());
                    if let Err(why) = cel::Value::resolve(e, &ctx) {
                        return fail(format!("{name} of a value it does not read: {why}"));
                    }
                }
                out.ty = if name == "timestamp" {
                    Ty::Timestamp
                } else {
                    Ty::Duration
                };
                out.scan(&ops[0], ops[0].size);
            }
            "int" | "uint" | "double" | "string" | "bool" | "bytes" => {
                if matches!(tys[0], Ty::List | Ty::Map) {
                    return fail(format!("{name} of a {}", tys[0].name()));
                }
                out.ty = match name {
                    "int" | "uint" => Ty::Int,
                    "double" => Ty::Double,
                    "string" => Ty::Str,
                    "bytes" => Ty::Bytes,
                    _ => Ty::Bool,
                };
                out.size = ops[0].size.max(32.0);
                out.scan(&ops[0], ops[0].size);
            }
            "type" => out.ty = Ty::Type,
            "dyn" => {
                out.ty = Ty::Dyn;
                out.size = ops[0].size;
                out.linear = ops[0].linear;
            }
            "getFullYear" | "getMonth" | "getDate" | "getDayOfMonth" | "getDayOfWeek"
            | "getDayOfYear" | "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds" => {
                if call.target.is_none()
                    || !matches!(tys[0], Ty::Timestamp | Ty::Duration | Ty::Dyn)
                    || ops.len() > 2
                {
                    return fail(format!("{name} of a {}", tys[0].name()));
                }
                out.ty = Ty::Int;
                out.scan_all(&ops);
            }
            other => {
                return fail(format!(
                    "the function {other:?} is not available in conditions"
                ));
            }
        }
        out.cost += 1.0;
        Ok(out)
    }
}

/// How many operands a function takes, where fixed (with its target).
fn arity(name: &str) -> Option<usize> {
    Some(match name {
        "!_"
        | "-_"
        | "@not_strictly_false"
        | "size"
        | "timestamp"
        | "duration"
        | "int"
        | "uint"
        | "double"
        | "string"
        | "bool"
        | "bytes"
        | "type"
        | "dyn" => 1,
        "_?_:_" => 3,
        "_&&_" | "_||_" => return None,
        n if n.starts_with('_') || n == "@in" => 2,
        "contains" | "startsWith" | "endsWith" | "matches" => 2,
        _ => return None,
    })
}

/// How many `_+_` in `e` have the accumulator `accu` as an operand.
fn appends_to(e: &IdedExpr, accu: &str) -> usize {
    match &e.expr {
        Expr::Call(call) => {
            let here = usize::from(
                call.func_name == "_+_"
                    && call
                        .args
                        .iter()
                        .any(|a| matches!(&a.expr, Expr::Ident(n) if n == accu)),
            );
            here + call
                .args
                .iter()
                .chain(call.target.as_deref())
                .map(|a| appends_to(a, accu))
                .sum::<usize>()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(predicate: &str) -> Statement {
        Statement::read(
            format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"a","digest":{{"sha256":"ab"}}}}],"predicateType":"https://cosign.sigstore.dev/attestation/vuln/v1","predicate":{predicate}}}"#
            )
            .as_bytes(),
            Needs {
                statement: true,
                predicate: true,
                subject: true,
            },
        )
        .unwrap()
    }

    /// 2026-12-07T00:00:00Z.
    const NOW: i64 = 1_796_601_600;

    #[test]
    fn the_readme_conditions_hold_and_fail_as_written() {
        let vuln = Condition::compile(
            "timestamp(predicate.metadata.scanFinishedOn) > now - duration('168h') && predicate.scanner.result.summary.critical == 0",
        )
        .unwrap();
        let scan = |when: &str, critical: u32| {
            statement(&format!(
                r#"{{"metadata":{{"scanFinishedOn":"{when}"}},"scanner":{{"result":{{"summary":{{"critical":{critical}}}}}}}}}"#
            ))
        };
        assert_eq!(vuln.holds(&scan("2026-12-05T10:00:00Z", 0), NOW), Ok(true));
        assert_eq!(vuln.holds(&scan("2026-12-05T10:00:00Z", 2), NOW), Ok(false));
        assert_eq!(vuln.holds(&scan("2026-11-20T10:00:00Z", 0), NOW), Ok(false));
        let e = vuln.holds(&scan("yesterday", 0), NOW).unwrap_err();
        assert!(!e.is_empty());
        // A missing field is an error, not false.
        assert!(vuln.holds(&statement("{}"), NOW).is_err());
        let provenance = Condition::compile(
            "predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/acme/app'",
        )
        .unwrap();
        let p = statement(
            r#"{"buildDefinition":{"externalParameters":{"workflow":{"repository":"https://github.com/acme/app"}}}}"#,
        );
        assert_eq!(provenance.holds(&p, NOW), Ok(true));
        let p = statement(
            r#"{"buildDefinition":{"externalParameters":{"workflow":{"repository":"https://github.com/acme/app2"}}}}"#,
        );
        assert_eq!(provenance.holds(&p, NOW), Ok(false));
        let all = Condition::compile(
            "subject.exists(s, s.digest.sha256 == 'ab') && predicateType.endsWith('/vuln/v1') && statement._type == 'https://in-toto.io/Statement/v1'",
        )
        .unwrap();
        assert_eq!(all.holds(&statement("{}"), NOW), Ok(true));
        let not_bool = Condition::compile("predicate").unwrap();
        assert!(
            not_bool
                .holds(&statement("1"), NOW)
                .unwrap_err()
                .contains("not a boolean")
        );
    }

    #[test]
    fn mistakes_are_found_when_the_policy_loads_with_their_position() {
        for (source, says) in [
            ("predicate.a ==", "does not parse: at 1:"),
            ("predicat.a == 1", "at 1:1: unknown name \"predicat\""),
            (
                "predicate.a == 1 && foo(1)",
                "at 1:24: the function \"foo\"",
            ),
            ("now > 5", "a timestamp ordered against a int"),
            ("predicateType == 1", "a string compared with a int"),
            ("'a' + 1 == 'a1'", "a string added to a int"),
            (
                "now - duration('7d') < now",
                "duration of a value it does not read",
            ),
            (
                "timestamp('yesterday') < now",
                "timestamp of a value it does not read",
            ),
            (
                "predicate.a.matches(predicate.b)",
                "written in the condition",
            ),
            ("predicate.a.matches('(')", "not a regular expression"),
            ("1 + 2", "gives a int, not a boolean"),
            ("predicateType.x == 1", "a field (\"x\") of a string"),
        ] {
            let e = Condition::compile(source).unwrap_err();
            assert!(e.contains(says), "{source}: {e}");
        }
        let long = format!("predicate.a == '{}'", "a".repeat(MAX_SOURCE));
        assert!(Condition::compile(&long).unwrap_err().contains("long"));
    }

    /// Expressions that could run long over a large statement are refused
    /// before they ever run; loops of one level, appending, are not.
    #[test]
    fn costly_expressions_are_refused() {
        for source in [
            "predicate.a.all(x, predicate.a.all(y, x == y))",
            "predicate.a.exists(x, predicate.b.exists(y, predicate.c.exists(z, true)))",
            "predicate.a.all(x, size(predicate.a + predicate.a) > 0)",
            "predicate.a.map(x, predicate.a).size() > 0",
            "predicate.a.all(x, x.matches('a+')) && predicate.b.all(y, y == predicate.c)",
            // cel-rust converts both operands of a failed comparison or
            // arithmetic into its error: a whole statement value per element.
            "predicate.items.all(i, i.score < predicate.max)",
            "predicate.a.all(x, x * predicate.f <= 10)",
            // A literal copies what it holds, at each element.
            "predicate.m.all(m, {'git': predicate.src}[m.scheme] == m.uri)",
            // A string's size counts its characters; a time zone is parsed.
            "predicate.a.all(x, size(predicate.note) < 100)",
            "predicate.a.all(x, now.getHours(predicate.tz) > 1)",
        ] {
            let e = Condition::compile(source).unwrap_err();
            assert!(e.contains("could cost"), "{source}: {e}");
        }
        for source in [
            "predicate.materials.all(m, m.uri.startsWith('git+https://github.com/acme/'))",
            "predicate.a.map(x, x.name).size() > 0",
            "predicate.a.filter(x, x.severity == 'CRITICAL').size() == 0",
            "'x' in predicate.list && predicate.list.exists(l, l == 'y')",
        ] {
            let c = Condition::compile(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert!(c.cost <= MAX_COST);
        }
    }

    /// The worst a condition can cost runs in bounded time: a loop over
    /// the largest list a statement can hold.
    #[test]
    fn the_largest_allowed_loop_runs() {
        let n = crate::verify::statement::MAX_VALUES - 20;
        let list = vec!["0"; n].join(",");
        let s = Statement::read(
            format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"v","predicate":{{"a":[{list}]}}}}"#
            )
            .as_bytes(),
            Needs {
                predicate: true,
                ..Needs::default()
            },
        )
        .unwrap();
        let c = Condition::compile("predicate.a.all(x, x == 0)").unwrap();
        assert_eq!(c.holds(&s, NOW), Ok(true));
    }
}
