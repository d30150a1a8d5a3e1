//! A tenant server's ParameterStatus report, kept encoded: every login of the tenant
//! repeats it to its client, most of it unchanged.

use bytes::{Bytes, BytesMut};

use crate::protocol::write;

/// What a server reported at login, as (name, value) and as the ParameterStatus
/// messages that tell a client the same.
#[derive(Debug)]
pub struct ServerParams {
    list: Vec<(String, String)>,
    /// `list` as ParameterStatus messages, in order.
    encoded: Bytes,
    /// Where each message of `encoded` ends.
    ends: Vec<usize>,
}

impl ServerParams {
    pub fn new(list: Vec<(String, String)>) -> Self {
        let mut buf = BytesMut::new();
        let mut ends = Vec::with_capacity(list.len());
        for (k, v) in &list {
            write::parameter_status(&mut buf, k, v);
            ends.push(buf.len());
        }
        ServerParams {
            list,
            encoded: buf.freeze(),
            ends,
        }
    }

    /// Write the report to `out`, with `value_for(name)` in place of the server's value
    /// where it gives one. Unchanged messages are copied as they are.
    pub fn write<'a>(&self, out: &mut BytesMut, value_for: impl Fn(&str) -> Option<&'a str>) {
        out.reserve(self.encoded.len());
        let mut copied = 0;
        for (i, (k, _)) in self.list.iter().enumerate() {
            let Some(v) = value_for(k) else {
                continue;
            };
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            out.extend_from_slice(&self.encoded[copied..start]);
            write::parameter_status(out, k, v);
            copied = self.ends[i];
        }
        out.extend_from_slice(&self.encoded[copied..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ServerParams {
        ServerParams::new(
            [
                ("application_name", ""),
                ("DateStyle", "ISO, MDY"),
                ("server_version", "16.4"),
                ("TimeZone", "UTC"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
    }

    /// The messages written one by one, as a login without the cache would.
    fn one_by_one(p: &ServerParams, overrides: &[(&str, &str)]) -> BytesMut {
        let mut out = BytesMut::new();
        for (k, v) in &p.list {
            let v = overrides
                .iter()
                .find(|(o, _)| o.eq_ignore_ascii_case(k))
                .map_or(v.as_str(), |(_, ov)| ov);
            write::parameter_status(&mut out, k, v);
        }
        out
    }

    #[test]
    fn overrides_land_in_their_own_messages() {
        let p = params();
        for overrides in [
            &[][..],
            &[("application_name", "psql")][..],
            &[("timezone", "Europe/Paris")][..],
            &[("datestyle", "German"), ("application_name", "x")][..],
            &[("timezone", "UTC+1"), ("application_name", "")][..],
            &[("not_reported", "1")][..],
        ] {
            let mut out = BytesMut::from(&b"prefix"[..]);
            p.write(&mut out, |k| {
                overrides
                    .iter()
                    .find(|(o, _)| o.eq_ignore_ascii_case(k))
                    .map(|(_, v)| *v)
            });
            let mut want = BytesMut::from(&b"prefix"[..]);
            want.extend_from_slice(&one_by_one(&p, overrides));
            assert_eq!(out, want, "{overrides:?}");
        }
    }

    #[test]
    fn an_empty_report_writes_nothing() {
        let p = ServerParams::new(Vec::new());
        let mut out = BytesMut::new();
        p.write(&mut out, |_| Some("UTC"));
        assert!(out.is_empty());
    }
}
