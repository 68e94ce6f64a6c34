//! `[tls] hsts`: Strict-Transport-Security on answers over HTTPS, unless
//! the app set its own.

use http::header::STRICT_TRANSPORT_SECURITY;

use crate::phases::{AnswerHead, Answering};
use crate::{Proto, Proxy};

pub(super) fn add(proxy: &Proxy, answering: &Answering, head: &mut dyn AnswerHead) {
    let Some(hsts) = &proxy.edge.hsts else {
        return;
    };
    if answering.proto == Proto::Https && !head.has(&STRICT_TRANSPORT_SECURITY) {
        head.add(STRICT_TRANSPORT_SECURITY, hsts);
    }
}
