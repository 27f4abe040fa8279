//! Keys of a graph: strings, or tuples like Dask's `("x", 0, 1)`.

use std::fmt;
use std::sync::Arc;

/// One element of a tuple key.
///
/// Integer parts are exact: `From` puts an integer in `i64`'s range in [`KeyPart::Int`] and a
/// larger `u64`/`usize` in [`KeyPart::UInt`], so integers order by number and distinct
/// numbers are distinct keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum KeyPart {
    /// An integer part.
    Int(i64),
    /// An integer part above `i64::MAX` (smaller ones are [`KeyPart::Int`]).
    UInt(u64),
    /// A string part.
    Str(Arc<str>),
}

/// The name of a node in a graph.
///
/// Strings and tuple keys may be mixed in one graph; they order deterministically (all string
/// keys before all tuple keys, each kind in its natural order), which is how ties break.
#[derive(Clone, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A string key, `"load-1"`.
    Str(Arc<str>),
    /// A tuple key, `("x", 0, 1)`.
    Tuple(Arc<[KeyPart]>),
}

// Equality and hashing by hand: planning looks every key reference up in the graph (one hash
// and one comparison each), and the derived ones hash a discriminant and a terminator and call
// `memcmp` for the short strings keys usually are. Same equality as the derived one.
impl PartialEq for Key {
    #[inline]
    fn eq(&self, other: &Key) -> bool {
        match (self, other) {
            (Key::Str(a), Key::Str(b)) => Arc::ptr_eq(a, b) || bytes_eq(a.as_bytes(), b.as_bytes()),
            (Key::Tuple(a), Key::Tuple(b)) => a == b,
            _ => false,
        }
    }
}

impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            // The bytes alone (no discriminant, no terminator): equal keys hash equally, which
            // is all `Hash` needs. Hashed within a composite, some splits of the same bytes
            // (("ab", "c"), ("a", "bc")) may then collide: a comparison more, never a wrong
            // answer.
            Key::Str(s) => state.write(s.as_bytes()),
            Key::Tuple(t) => t.hash(state),
        }
    }
}

/// Whether two byte strings are equal, without a call for strings of up to 16 bytes.
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        // Two overlapping words cover the string.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

impl Key {
    /// A tuple key from its parts.
    pub fn tuple(parts: impl IntoIterator<Item = KeyPart>) -> Key {
        Key::Tuple(parts.into_iter().collect())
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Int(i) => write!(f, "{i}"),
            KeyPart::UInt(u) => write!(f, "{u}"),
            KeyPart::Str(s) => write!(f, "'{s}'"),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Str(s) => f.write_str(s),
            Key::Tuple(parts) => {
                f.write_str("(")?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                if parts.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Str(s) => write!(f, "{s:?}"),
            Key::Tuple(_) => write!(f, "{self}"),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::Str(s.into())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key::Str(s.into())
    }
}

impl From<&String> for Key {
    fn from(s: &String) -> Key {
        Key::Str(s.as_str().into())
    }
}

impl From<&Key> for Key {
    fn from(k: &Key) -> Key {
        k.clone()
    }
}

impl From<i64> for KeyPart {
    fn from(i: i64) -> KeyPart {
        KeyPart::Int(i)
    }
}

impl From<i32> for KeyPart {
    fn from(i: i32) -> KeyPart {
        KeyPart::Int(i.into())
    }
}

impl From<u32> for KeyPart {
    fn from(i: u32) -> KeyPart {
        KeyPart::Int(i.into())
    }
}

impl From<u64> for KeyPart {
    fn from(u: u64) -> KeyPart {
        i64::try_from(u).map_or(KeyPart::UInt(u), KeyPart::Int)
    }
}

impl From<usize> for KeyPart {
    fn from(u: usize) -> KeyPart {
        // usize is at most 64 bits on every platform Rust supports.
        KeyPart::from(u as u64)
    }
}

impl From<&str> for KeyPart {
    fn from(s: &str) -> KeyPart {
        KeyPart::Str(s.into())
    }
}

impl From<String> for KeyPart {
    fn from(s: String) -> KeyPart {
        KeyPart::Str(s.into())
    }
}

macro_rules! tuple_keys {
    ($(($($t:ident $v:ident),+)),*) => {$(
        impl<$($t: Into<KeyPart>),+> From<($($t,)+)> for Key {
            fn from(($($v,)+): ($($t,)+)) -> Key {
                Key::Tuple(Arc::from([$($v.into()),+]))
            }
        }
    )*};
}
tuple_keys!((A a), (A a, B b), (A a, B b, C c), (A a, B b, C c, D d), (A a, B b, C c, D d, E e));

/// The keys asked of `get`: one key, or lists of keys nested up to
/// [`MAX_NESTING`](crate::MAX_NESTING) levels deep (deeper requests are refused with
/// [`GraphError::RequestTooDeep`](crate::GraphError::RequestTooDeep) before any task runs). The
/// result of `get` mirrors this nesting.
///
/// Dropping a `Keys` does not recurse, however deep it is. (It implements `Drop`, so a `Keys`
/// cannot be destructured by moving its fields out; match on a reference instead.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keys {
    /// One key.
    One(Key),
    /// A list of key requests.
    List(Vec<Keys>),
}

impl Drop for Keys {
    fn drop(&mut self) {
        // The derived drop would recurse once per level: a request nested 100,000 deep would
        // overflow the stack. Lists of plain keys (the usual case) take the fast path.
        let Keys::List(l) = self else {
            return;
        };
        if !l
            .iter()
            .any(|k| matches!(k, Keys::List(l) if !l.is_empty()))
        {
            return;
        }
        let mut stack = std::mem::take(l);
        while let Some(mut k) = stack.pop() {
            if let Keys::List(l) = &mut k {
                stack.append(l);
            }
            // `k` is now a key or an empty list: dropping it does not recurse.
        }
    }
}

impl Keys {
    /// Every key in the request, in order (duplicates kept).
    pub fn flatten(&self) -> Vec<&Key> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(k) = stack.pop() {
            match k {
                Keys::One(k) => out.push(k),
                Keys::List(l) => stack.extend(l.iter().rev()),
            }
        }
        out
    }
}

impl<T: Into<Key>> From<T> for Keys {
    fn from(k: T) -> Keys {
        Keys::One(k.into())
    }
}

impl<T: Into<Keys>> From<Vec<T>> for Keys {
    fn from(v: Vec<T>) -> Keys {
        Keys::List(v.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Keys>, const N: usize> From<[T; N]> for Keys {
    fn from(v: [T; N]) -> Keys {
        Keys::List(v.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_keys_print_like_python() {
        assert_eq!(Key::from(("x", 0, 1)).to_string(), "('x', 0, 1)");
        assert_eq!(Key::from(("x",)).to_string(), "('x',)");
        assert_eq!(Key::from("x").to_string(), "x");
    }

    #[test]
    fn mixed_keys_order_deterministically() {
        let mut ks = vec![
            Key::from(("a", 2)),
            Key::from("b"),
            Key::from(("a", 1)),
            Key::from("a"),
        ];
        ks.sort();
        assert_eq!(
            ks,
            vec![
                Key::from("a"),
                Key::from("b"),
                Key::from(("a", 1)),
                Key::from(("a", 2))
            ]
        );
    }

    #[test]
    fn integer_parts_above_i64_stay_distinct_and_ordered() {
        let big = Key::from(("x", usize::MAX));
        let max = Key::from(("x", i64::MAX as usize));
        assert_ne!(big, max);
        assert!(max < big);
        assert!(Key::from(("x", u64::MAX - 1)) < big);
        assert_eq!(big.to_string(), format!("('x', {})", u64::MAX));
        assert_eq!(Key::from(("x", 5u64)), Key::from(("x", 5i64)));
    }
}
