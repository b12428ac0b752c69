//! What appends store and look up while a checkpoint commits beside the writer
//! (`writer::commit`), when there is no transaction: their rows are held for the next one
//! ([`HeldRow`]), and their client ids are looked up among those rows and in the database as last
//! committed ([`CommitInFlight`]).

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, StorageError};

use super::{CLIENT_IDS, Tables};
use crate::embedded::client_ids::UncommittedClientIds;
use crate::embedded::journal::ClientKey;

/// An inbox row appended while a checkpoint commits, waiting for the next transaction.
pub(in crate::embedded) struct HeldRow {
    pub user: String,
    pub seq: u64,
    pub ms: u64,
    pub body: Vec<u8>,
    /// The message's client id, for the client-id table.
    pub client: Option<HeldClientId>,
}

/// A [`ClientKey`] held with its row.
pub(in crate::embedded) struct HeldClientId {
    pub from: String,
    pub client_id: String,
    pub message_id: String,
    pub created_ms: u64,
}

impl HeldClientId {
    pub fn key(&self) -> ClientKey<'_> {
        ClientKey {
            from: &self.from,
            client_id: &self.client_id,
            message_id: &self.message_id,
            created_ms: self.created_ms,
        }
    }
}

type ClientIdTable = ReadOnlyTable<(&'static str, &'static str, &'static str), (&'static str, u64)>;

/// The commit in flight, as appends with client ids see it: the ids its transaction wrote, and
/// the client-id table of the database as committed before it.
pub(in crate::embedded) struct CommitInFlight {
    /// Client ids of the committing transaction: an append with one of these waits.
    pub ids: UncommittedClientIds,
    /// A read transaction's table, opened for the first append with a client id.
    committed: Option<ClientIdTable>,
    /// Opening was tried: after a failure, appends with client ids wait for the commit's end.
    opened: bool,
}

impl CommitInFlight {
    pub fn new(ids: UncommittedClientIds) -> Self {
        Self {
            ids,
            committed: None,
            opened: false,
        }
    }

    /// Opens the committed client-id table, once per commit.
    pub fn open_committed(&mut self, db: &Database) {
        if self.opened {
            return;
        }
        self.opened = true;
        let opened = db
            .begin_read()
            .map_err(redb::Error::from)
            .and_then(|read| read.open_table(CLIENT_IDS).map_err(redb::Error::from));
        match opened {
            Ok(table) => self.committed = Some(table),
            // A file without the table yet, or a read that failed: those appends wait.
            Err(e) => tracing::debug!(error = %e, "embedded store: no committed client ids"),
        }
    }

    /// Whether an append may look `key` up now: it is not among the committing transaction's
    /// ids, and the committed table is open.
    pub fn can_check(&self, key: (&str, &str, &str)) -> bool {
        self.committed.is_some() && !self.ids.may_hold(key)
    }
}

impl Tables<'_> {
    /// Stores a message's inbox row, and its client id if it has one: in the tables, or held for
    /// the next transaction while a checkpoint commits.
    pub fn insert_message(
        &mut self,
        user: &str,
        seq: u64,
        ms: u64,
        body: &[u8],
        client: Option<&ClientKey<'_>>,
    ) -> Result<(), StorageError> {
        if let Some(c) = client {
            self.client_ids_written.record((c.from, user, c.client_id));
        }
        match &mut self.held {
            Some(held) => held.push(HeldRow {
                user: user.to_owned(),
                seq,
                ms,
                body: body.to_vec(),
                client: client.map(|c| HeldClientId {
                    from: c.from.to_owned(),
                    client_id: c.client_id.to_owned(),
                    message_id: c.message_id.to_owned(),
                    created_ms: c.created_ms,
                }),
            }),
            None => {
                self.inbox.table()?.insert((user, seq), (ms, body))?;
                if let Some(c) = client {
                    self.client_ids
                        .table()?
                        .insert((c.from, user, c.client_id), (c.message_id, c.created_ms))?;
                }
            }
        }
        Ok(())
    }

    /// The message id and creation time stored under `(sender, recipient, client id)`: in the
    /// open transaction or, while a checkpoint commits, among the held rows or else in the
    /// committed table (`writer::commit` runs such an append only when the commit's own ids
    /// cannot hold the key: checked again here, an error rather than a second copy).
    pub fn client_id(
        &mut self,
        key: (&str, &str, &str),
    ) -> Result<Option<(String, u64)>, StorageError> {
        let found = |(id, created_ms): (&str, u64)| Some((id.to_owned(), created_ms));
        let Some(held) = &self.held else {
            return Ok(match self.client_ids.table()?.get(key)? {
                Some(guard) => found(guard.value()),
                None => None,
            });
        };
        if self.client_ids_written.may_hold(key) {
            let (from, to, client_id) = key;
            let same = |c: &&HeldClientId| c.from == from && c.client_id == client_id;
            if let Some(c) = held
                .iter()
                .filter(|row| row.user == to)
                .find_map(|row| row.client.as_ref().filter(same))
            {
                return Ok(Some((c.message_id.clone(), c.created_ms)));
            }
        }
        let committed = match self.in_flight {
            Some(in_flight) if in_flight.can_check(key) => in_flight.committed.as_ref(),
            _ => None,
        };
        let Some(committed) = committed else {
            return Err(StorageError::Corrupted(
                "a client id was looked up while the commit that may hold it runs".to_owned(),
            ));
        };
        Ok(match committed.get(key)? {
            Some(guard) => found(guard.value()),
            None => None,
        })
    }
}
