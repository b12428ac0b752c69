//! [`Lazy`]: a table of the open write transaction, opened the first time an operation uses it.

use redb::{
    Key, StorageError, Table, TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};

/// A table of the transaction, opened when first used. Opening all six for every group cost
/// 14 % of the writer's CPU at 10,000 msg/s (twelfth set of docs/benchmarks.md), where a group
/// is a message or two and touches the inbox alone (heads and device records are in the inbox
/// states, client ids only come with client-chosen ids, push tokens with their own requests).
pub(in crate::embedded) struct Lazy<'t, K: Key + 'static, V: Value + 'static> {
    /// `None` while a checkpoint commits the transaction on another thread (`writer::commit`):
    /// then the table cannot be opened, and the operations that would need it wait.
    txn: Option<&'t WriteTransaction>,
    definition: TableDefinition<'static, K, V>,
    table: Option<Table<'t, K, V>>,
}

impl<'t, K: Key + 'static, V: Value + 'static> Lazy<'t, K, V> {
    pub(in crate::embedded) fn new(
        txn: &'t WriteTransaction,
        definition: TableDefinition<'static, K, V>,
    ) -> Self {
        Self {
            txn: Some(txn),
            definition,
            table: None,
        }
    }

    /// A table of no transaction: using it is an error (see `writer::commit`, whose checks keep
    /// the operations it runs meanwhile from needing one).
    pub(in crate::embedded) fn absent(definition: TableDefinition<'static, K, V>) -> Self {
        Self {
            txn: None,
            definition,
            table: None,
        }
    }

    /// The table, opened (and created, in a new file) the first time.
    pub fn table(&mut self) -> Result<&mut Table<'t, K, V>, StorageError> {
        if self.table.is_none() {
            let Some(txn) = self.txn else {
                return Err(StorageError::Corrupted(format!(
                    "table {} used while a checkpoint commits",
                    self.definition.name()
                )));
            };
            let table = txn.open_table(self.definition).map_err(table_error)?;
            self.table = Some(table);
        }
        self.table.as_mut().ok_or_else(|| {
            StorageError::Corrupted(format!("table {} not kept open", self.definition.name()))
        })
    }

    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.table.is_some()
    }
}

/// A table that cannot be opened: an I/O error as it is, anything else (a table of another
/// type under the name, a table already open) is a file or a program the store cannot work with.
fn table_error(e: TableError) -> StorageError {
    match e {
        TableError::Storage(e) => e,
        other => StorageError::Corrupted(format!("cannot open a table: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Tables;
    use redb::{Database, ReadableDatabase, TableHandle};

    fn database() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db.redb")).unwrap();
        (dir, db)
    }

    /// A group that reads an inbox state and writes a message opens the inbox, heads and device
    /// tables and no other: the point of opening lazily (fails if `open` opens them all).
    #[test]
    fn a_group_opens_only_the_tables_it_uses() {
        let (_dir, db) = database();
        let txn = db.begin_write().unwrap();
        let mut t = Tables::open(&txn);
        assert!(!t.inbox.is_open() && !t.heads.is_open());
        t.head("bob").unwrap();
        t.inbox
            .table()
            .unwrap()
            .insert(("bob", 1), (7, b"{}".as_slice()))
            .unwrap();
        assert!(t.inbox.is_open() && t.heads.is_open() && t.devices.is_open());
        assert!(!t.client_ids.is_open());
        assert!(!t.push_devices.is_open() && !t.push_owners.is_open());
        drop(t);
        txn.commit().unwrap();
    }

    /// A new file holds every table from the start (`Tables::create`), so nothing depends on
    /// which tables the first groups happened to use.
    #[test]
    fn create_makes_every_table() {
        let (_dir, db) = database();
        let txn = db.begin_write().unwrap();
        Tables::create(&txn).unwrap();
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let mut names: Vec<String> = read
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "client_ids_per_recipient",
                "device_state",
                "inbox",
                "inbox_heads",
                "push_devices",
                "push_owners",
            ]
        );
    }
}
