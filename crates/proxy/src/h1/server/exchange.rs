//! One exchange on a client connection: the request (and its body, lent
//! the connection's reading side) through the phases, the answer written.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::header::HeaderValue;
use tokio::io::AsyncWriteExt;

use super::client_body::{lock, ClientBody, Lent};
use super::write::{H1Head, Persistence};
use super::{ClientStream, Connection, Request, Route, CLIENT_READ_CHUNK, LINGER};
use crate::body::Parked;
use crate::h1::coalesce::{hold_answer, Awaiting};
use crate::h1::decode::Decoding;
use crate::h1::Silence;
use crate::phases::upstream::{self, Forwarded};
use crate::phases::{self, Log};
use crate::sites::Site;
use crate::Proxy;

impl<S: ClientStream> Connection<S> {
    /// Forwards `request`, with its body if it has one, and writes the
    /// answer. Says whether the connection stays open for another request.
    pub(super) async fn exchange(
        &mut self,
        proxy: &Arc<Proxy>,
        request: Request,
        client: &HeaderValue,
    ) -> io::Result<bool> {
        let (site, head, log) = match request.route {
            Route::Site(site, head, log) => (site, head, log),
            Route::Own(answer, log) => {
                // A body not read cannot be told from a next request: close.
                let keep_alive = request.keep_alive
                    && request.body == Decoding::Done
                    && !self.shutdown.is_cancelled()
                    && !answer.close;
                let answer = phases::own_answer(proxy, self.proto, client, log, answer);
                let persistence = Persistence::of(keep_alive, request.http10);
                self.write_own(answer, persistence).await?;
                return Ok(keep_alive);
            }
        };
        let exchange = Exchange {
            site: &site,
            head: &head,
            keep_alive: request.keep_alive,
            http10: request.http10,
            client,
        };
        if request.body == Decoding::Done {
            return self
                .answer(proxy, exchange, log, &Parked::default(), None)
                .await;
        }
        if request.expects_continue {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().await?;
        }
        let lent = Arc::new(Mutex::new(Lent {
            reader: self.reader.take(),
            read: std::mem::take(&mut self.read),
            decoding: request.body,
            limit: proxy.config.body_limit(),
            received: 0,
            body_timeout: proxy.config.body_timeout,
            silence: Silence::default(),
        }));
        let body = Parked::new(ClientBody(lent.clone()));
        let answered = self.answer(proxy, exchange, log, &body, Some(&lent)).await;
        drop(body);
        self.reclaim(&lent);
        if lock(&lent).is_done() {
            return answered;
        }
        // The instance answered without reading the whole body. The rest of
        // it cannot be told from a next request, so the connection closes;
        // first the client's bytes are read away for a while, since a close
        // with unread bytes resets the connection, which can destroy the
        // answer before the client has read it (nginx's lingering close).
        let _ = self.writer.shutdown().await;
        if let Some(reader) = self.reader.as_mut() {
            let mut sink = tokio::io::sink();
            let _ = tokio::time::timeout(LINGER, tokio::io::copy(reader, &mut sink)).await;
        }
        answered.map(|_| false)
    }

    /// Phases 3 to 5 for a request an app's instances answer (see
    /// `exchange`).
    async fn answer(
        &mut self,
        proxy: &Arc<Proxy>,
        exchange: Exchange<'_>,
        log: Log,
        body: &Parked,
        lent: Option<&Arc<Mutex<Lent<S::Reader>>>>,
    ) -> io::Result<bool> {
        let Exchange {
            site,
            head,
            client,
            http10,
            ..
        } = exchange;
        let forward = upstream::pass(proxy, site, head, body, client);
        tokio::pin!(forward);
        // A client that leaves before the answer takes its request along
        // (as with nginx and hyper): the instance's connection closes, so
        // the app sees the request aborted, and the request stops counting
        // as in flight, so a drain does not wait for it (`pass` counts it
        // as abandoned when dropped unfinished).
        let awaiting = Awaiting::new();
        let forwarded = poll_fn(|cx| match forward.as_mut().poll(cx) {
            Poll::Ready(forwarded) => Poll::Ready(Some(forwarded)),
            Poll::Pending if self.watch_client(lent, cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let Some(forwarded) = forwarded else {
            log.abandoned(client);
            return Err(io::ErrorKind::ConnectionAborted.into());
        };
        drop(awaiting);
        // The body is not all read when the instance answers first: the
        // connection closes after this answer (see `exchange`).
        let body_pending = lent.is_some_and(|l| !lock(l).is_done());
        if let (Some(lent), false) = (lent, body_pending) {
            // Read in full: the connection watches its client again.
            self.reclaim(lent);
        }
        let mut keep_alive = exchange.keep_alive && !body_pending && !self.shutdown.is_cancelled();
        let Forwarded { reply, served } = match forwarded {
            Ok(f) => f,
            Err(refusal) => {
                keep_alive &= !refusal.close;
                let answer = phases::own_answer(proxy, self.proto, client, log, refusal.answer());
                self.write_own(answer, Persistence::of(keep_alive, http10))
                    .await?;
                return Ok(keep_alive);
            }
        };
        let answer_head = &reply.head;
        // A body the instance did not delimit is chunked for an HTTP/1.1
        // client; an HTTP/1.0 client reads it until the close.
        let chunked = !answer_head.is_delimited() && !http10;
        keep_alive &= answer_head.is_delimited() || chunked;
        answer_head.write_to(&mut self.out);
        let mut written = H1Head {
            head: answer_head,
            out: &mut self.out,
        };
        let reply = phases::Reply {
            status: answer_head.status(),
            head: &mut written,
            body: reply.body,
            event_stream: answer_head.is_event_stream(),
        };
        let responding = phases::respond(proxy, self.proto, served, reply, &log);
        if chunked {
            self.out
                .extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        self.write_connection(Persistence::of(keep_alive, http10));
        self.out.extend_from_slice(b"\r\n");
        hold_answer().await;
        let sent = self.send_body(responding.body, chunked).await?;
        log.answered(client, responding.status, sent, responding.by);
        Ok(keep_alive)
    }

    /// Takes the reading side back from a request body, with what was
    /// read past the body.
    pub(super) fn reclaim(&mut self, lent: &Mutex<Lent<S::Reader>>) {
        let mut lent = lock(lent);
        if let Some(reader) = lent.reader.take() {
            self.reader = Some(reader);
            self.read = std::mem::take(&mut lent.read);
        }
    }

    /// Whether the client went away while its answer is awaited. A body
    /// still being read notices that itself; one read in full gives the
    /// reading side back first.
    fn watch_client(
        &mut self,
        lent: Option<&Arc<Mutex<Lent<S::Reader>>>>,
        cx: &mut Context<'_>,
    ) -> bool {
        if let Some(lent) = lent.filter(|l| self.reader.is_none() && lock(l).is_done()) {
            self.reclaim(lent);
        }
        self.client_gone(cx)
    }

    /// Whether the client closed its side. What it sent meanwhile (a
    /// pipelined request) is kept, up to a head's worth.
    pub(super) fn client_gone(&mut self, cx: &mut Context<'_>) -> bool {
        // While the request body has the reading side, the body's reads
        // notice a close.
        let Some(reader) = self.reader.as_mut() else {
            return false;
        };
        while self.read.len() < CLIENT_READ_CHUNK * 8 {
            if self.read.capacity() - self.read.len() < 1024 {
                self.read.reserve(CLIENT_READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *reader), cx, &mut self.read) {
                Poll::Ready(Ok(0) | Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return false,
            }
        }
        false
    }
}

/// What `answer` needs of a request bound for an app's instances.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    site: &'a Site,
    head: &'a crate::h1::RequestHead,
    keep_alive: bool,
    /// An HTTP/1.0 client, which knows no chunked bodies.
    http10: bool,
    client: &'a HeaderValue,
}
