//! A fresh client drew a canary bucket for its request: the answer's
//! Set-Cookie keeps it on that side from then on (see `split`).

use http::header::{HeaderValue, SET_COOKIE};

use crate::phases::{AnswerHead, Answering};
use crate::{split, Proxy};

pub(super) fn add(_: &Proxy, answering: &Answering, head: &mut dyn AnswerHead) {
    let cookie = (answering.sticky).and_then(|b| HeaderValue::from_str(&split::cookie(b)).ok());
    if let Some(cookie) = cookie {
        head.add(SET_COOKIE, &cookie);
    }
}
