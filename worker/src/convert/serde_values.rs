//! [`Serde<T>`]: user types carried through the graph with serde.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::collections::list_items;
use super::*;

/// A user type carried through the graph with serde, encoded as MessagePack (`rmp-serde`,
/// structs as maps with their field names).
///
/// Use it as a parameter (`Serde<Stats>`, also inside `Vec`, `Option` and maps) or a return
/// type (`Serde(stats)`). The encoding is self-describing, so serde's whole data model works:
/// `#[serde(flatten)]`, internally, adjacently tagged and untagged enums, `serde_json::Value`,
/// `skip_serializing_if`, maps with non-string keys, 128-bit integers. A parameter `Serde<T>`
/// may borrow: a `&'a str` field (with `#[serde(borrow)]` where serde asks for it) points into
/// the encoded value, also when it lives in a shared segment.
///
/// A value is accepted by a parameter of the same Rust type (by `std::any::type_name`). A
/// value whose `Serialize` fails fails the task that returned it ([`CallError::Unencodable`],
/// with serde's message); one that does not decode fails the consumer with a
/// [`CallError::Mismatch`] naming the parameter and the decoder's message. Limits are serde's
/// own: `Some(None)` of an `Option<Option<T>>` reads back as `None` (as in JSON), and a
/// `u128`/`i128` inside a flattened struct or an untagged enum does not decode (serde buffers
/// those without 128-bit integers).
#[derive(Debug, Clone, PartialEq)]
pub struct Serde<T>(pub T);

impl<T: Serialize> Serde<T> {
    fn encode(&self) -> Result<Value, EncodeError> {
        let mut bytes = Vec::new();
        rmp_serde::encode::write_named(&mut bytes, &self.0)
            .map(|()| {
                Value::Encoded(
                    std::any::type_name::<T>().to_owned(),
                    Buffer::copy_from_bytes(&bytes),
                )
            })
            .map_err(|e| EncodeError {
                type_name: std::any::type_name::<T>().to_owned(),
                message: e.to_string(),
            })
    }
}

impl<T: Serialize> IntoValue for Serde<T> {
    /// # Panics
    /// When `T`'s `Serialize` fails; task results report it instead (see
    /// [`IntoValue::try_into_value`]).
    fn into_value(self) -> Value {
        self.encode()
            .unwrap_or_else(|e| panic!("cannot encode {e}"))
    }
    fn try_into_value(self) -> Result<Value, EncodeError> {
        self.encode()
    }
}

impl<'a, T: Deserialize<'a>> FromArg<'a> for Serde<T> {
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        let want = std::any::type_name::<T>();
        match arg.value() {
            Some(Value::Encoded(name, bytes)) if name == want => {
                rmp_serde::from_slice(bytes.as_bytes())
                    .map(Serde)
                    .map_err(|e| Mismatch {
                        expected: want.into(),
                        got: format!("a value that does not decode as {name}: {e}"),
                    })
            }
            _ => Err(Mismatch::new(want, arg)),
        }
    }
}

impl<T: Serialize + DeserializeOwned> VecItem for Serde<T> {
    /// # Panics
    /// As [`Serde::into_value`].
    fn vec_into_value(v: Vec<Self>) -> Value {
        Value::List(v.into_iter().map(IntoValue::into_value).collect())
    }
    fn vec_try_into_value(v: Vec<Self>) -> Result<Value, EncodeError> {
        v.into_iter()
            .map(IntoValue::try_into_value)
            .collect::<Result<_, _>>()
            .map(Value::List)
    }
    fn vec_from_arg(arg: &ArgValue<'_>) -> Result<Vec<Self>, Mismatch> {
        list_items(arg, |a| Serde::from_arg(a))
    }
}
