//! The static types the checker infers, and what the standard library
//! declares for them.

use cel::common::ast::LiteralValue;

use crate::schema::Field;

/// A static type, as far as it can be known; `Dyn` when it cannot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Dyn,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Timestamp,
    Duration,
    Type,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Vehicle,
    Ecu,
}

impl Ty {
    pub(crate) fn name(&self) -> String {
        match self {
            Ty::Dyn => "dyn".into(),
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Uint => "uint".into(),
            Ty::Double => "double".into(),
            Ty::String => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Null => "null".into(),
            Ty::Timestamp => "timestamp".into(),
            Ty::Duration => "duration".into(),
            Ty::Type => "type".into(),
            Ty::List(t) => format!("list({})", t.name()),
            Ty::Map(k, v) => format!("map({}, {})", k.name(), v.name()),
            Ty::Vehicle => "vehicle".into(),
            Ty::Ecu => "ecu".into(),
        }
    }

    /// "a string", "an int".
    pub(crate) fn with_article(&self) -> String {
        let name = self.name();
        let article = if matches!(self, Ty::Int | Ty::Ecu) {
            "an"
        } else {
            "a"
        };
        format!("{article} {name}")
    }

    pub(crate) fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    pub(crate) fn is_mapping(&self) -> bool {
        matches!(self, Ty::Map(..) | Ty::Vehicle | Ty::Ecu)
    }

    pub(crate) fn known(&self) -> bool {
        *self != Ty::Dyn
    }

    pub(crate) fn is(&self, want: &Ty) -> bool {
        self == want || *self == Ty::Dyn
    }
}

pub(crate) fn field_type(f: Field) -> Ty {
    match f {
        Field::ModelYear => Ty::Int,
        Field::Tags => Ty::List(Box::new(Ty::String)),
        Field::Attributes => Ty::Map(Box::new(Ty::String), Box::new(Ty::String)),
        Field::Ecus => Ty::Map(Box::new(Ty::String), Box::new(Ty::Ecu)),
        Field::LastSeen => Ty::Timestamp,
        _ => Ty::String,
    }
}

/// Whether `==` between the two can ever be true.
pub(crate) fn comparable(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::Dyn | Ty::Null, _) | (_, Ty::Dyn | Ty::Null) => true,
        (x, y) if x.is_numeric() && y.is_numeric() => true,
        (Ty::List(x), Ty::List(y)) => comparable(x, y),
        (x, y) if x.is_mapping() && y.is_mapping() => true,
        (x, y) => x == y,
    }
}

pub(crate) fn orderable(t: &Ty) -> bool {
    t.is_numeric()
        || matches!(
            t,
            Ty::Dyn | Ty::String | Ty::Bytes | Ty::Bool | Ty::Timestamp | Ty::Duration
        )
}

/// Global functions of the standard library, and their result types.
pub(crate) const GLOBAL_FUNCTIONS: [(&str, Ty); 12] = [
    ("version_cmp", Ty::Int),
    ("size", Ty::Int),
    ("int", Ty::Int),
    ("uint", Ty::Uint),
    ("double", Ty::Double),
    ("string", Ty::String),
    ("bool", Ty::Bool),
    ("bytes", Ty::Bytes),
    ("timestamp", Ty::Timestamp),
    ("duration", Ty::Duration),
    ("dyn", Ty::Dyn),
    ("type", Ty::Type),
];

pub(crate) const STRING_METHODS: [&str; 4] = ["startsWith", "endsWith", "contains", "matches"];

pub(crate) const TIME_METHODS: [&str; 10] = [
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
];

pub(crate) const TYPE_NAMES: [&str; 10] = [
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// Every function name an expression may call, for "did you mean".
pub(crate) fn function_names() -> impl Iterator<Item = &'static str> {
    GLOBAL_FUNCTIONS
        .iter()
        .map(|(n, _)| *n)
        .chain(STRING_METHODS)
        .chain(TIME_METHODS)
}

pub(crate) fn literal_type(l: &LiteralValue) -> Ty {
    match l {
        LiteralValue::Boolean(_) => Ty::Bool,
        LiteralValue::Int(_) => Ty::Int,
        LiteralValue::UInt(_) => Ty::Uint,
        LiteralValue::Double(_) => Ty::Double,
        LiteralValue::String(_) => Ty::String,
        LiteralValue::Bytes(_) => Ty::Bytes,
        LiteralValue::Null => Ty::Null,
    }
}

/// The element type of a literal list or map: the one type when all agree.
pub(crate) fn common_type(types: &[Ty]) -> Ty {
    match types.split_first() {
        Some((first, rest)) if rest.iter().all(|t| t == first) => first.clone(),
        _ => Ty::Dyn,
    }
}
