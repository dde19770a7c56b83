//! The vetting's catalog walk: of what a resolved statement can run, the objects owned by a
//! role its owner does not trust, read straight from the system caches and catalog indexes.
//!
//! Why not SQL: the same walk as one catalog query (six runs per simulate()) spent most of the
//! warm replay worker's time starting up its executor (a plan of about a hundred nodes) for a
//! handful of rows. These are the lookups that query's plan made, in the same order of sets,
//! with the same answer (the e2e replay-attack tests pin it), plus what that query missed (an
//! aggregate's sort operator and transition types, an operator's commutator and negator);
//! nothing is cached between calls, so every check reads the catalog as it is now.
//!
//! What counts (see vetting.rs and docs/security-model.md): the statement's functions,
//! operators (with their functions, estimators, commutators and negators), aggregates'
//! support functions, sort operators and transition types, the types it coerces to (with what
//! a value of them holds, their I/O functions, range functions and domain constraints), views,
//! foreign tables, relations whose rules or policies it uses, and what the planner folds from
//! every relation it reads or their inheritance children (index expressions and predicates,
//! CHECK constraints, extended statistics: pg_depend).

use pgrx::pg_sys::{self, Oid};
use std::collections::{BTreeSet, HashSet};
use std::ffi::{c_char, CStr};

// Catalogs and indexes pgrx's bindings leave out, as catalog/*_d.h of 15 to 18 define them.
const DEPEND_RELATION_ID: Oid = Oid::from_u32(2608);
const DEPEND_DEPENDER_INDEX_ID: Oid = Oid::from_u32(2673);
const CONSTRAINT_RELATION_ID: Oid = Oid::from_u32(2606);
const CONSTRAINT_RELID_TYPID_NAME_INDEX_ID: Oid = Oid::from_u32(2665);
const CONSTRAINT_TYPID_INDEX_ID: Oid = Oid::from_u32(2666);
const INHERITS_RELATION_ID: Oid = Oid::from_u32(2611);
const INHERITS_PARENT_INDEX_ID: Oid = Oid::from_u32(2187);
const STATISTIC_EXT_RELATION_ID: Oid = Oid::from_u32(3381);
const STATISTIC_EXT_RELID_INDEX_ID: Oid = Oid::from_u32(3379);
// Column numbers (Anum_...) of the keys scanned.
const ATTRELID: pg_sys::AttrNumber = 1; // pg_attribute
                                        // pg_constraint: PostgreSQL 18 added conenforced before convalidated, moving both by one.
#[cfg(not(feature = "pg18"))]
const CONRELID: pg_sys::AttrNumber = 8;
#[cfg(not(feature = "pg18"))]
const CONTYPID: pg_sys::AttrNumber = 9;
#[cfg(feature = "pg18")]
const CONRELID: pg_sys::AttrNumber = 9;
#[cfg(feature = "pg18")]
const CONTYPID: pg_sys::AttrNumber = 10;
const DEP_CLASSID: pg_sys::AttrNumber = 1; // pg_depend
const DEP_OBJID: pg_sys::AttrNumber = 2; // pg_depend
const INDRELID: pg_sys::AttrNumber = 2; // pg_index
const INHPARENT: pg_sys::AttrNumber = 2; // pg_inherits
const STXRELID: pg_sys::AttrNumber = 2; // pg_statistic_ext

/// The fixed-width start of catalog rows pgrx has no struct for (all fields fixed-width and NOT
/// NULL, so GETSTRUCT reads them as PostgreSQL's own Form_ structs do). Fields not read are
/// there for the layout.
#[repr(C)]
#[allow(dead_code)]
struct DependRow {
    classid: Oid,
    objid: Oid,
    objsubid: i32,
    refclassid: Oid,
    refobjid: Oid,
}

#[repr(C)]
#[allow(dead_code)]
struct AggregateRow {
    aggfnoid: Oid,
    aggkind: c_char,
    aggnumdirectargs: i16,
    support: [Oid; 8],        // aggtransfn .. aggmfinalfn
    final_flags: [c_char; 4], // aggfinalextra .. aggmfinalmodify
    aggsortop: Oid,
    aggtranstype: Oid,
    aggtransspace: i32,
    aggmtranstype: Oid,
}

#[repr(C)]
#[allow(dead_code)]
struct RangeRow {
    rngtypid: Oid,
    rngsubtype: Oid,
    rngmultitypid: Oid,
    rngcollation: Oid,
    rngsubopc: Oid,
    rngcanonical: Oid,
    rngsubdiff: Oid,
}

/// What a statement uses, by catalog object (oids below FirstNormalObjectId already dropped
/// from the lists, as the caller does).
pub struct Objects<'a> {
    pub functions: &'a [Oid],
    pub operators: &'a [Oid],
    pub relations: &'a [Oid],
    /// Relations whose row-level security quals the statement got.
    pub with_policies: &'a [Oid],
    pub types: &'a [Oid],
}

/// The objects owned by a role `owner` does not trust, described as "function m.f(integer),
/// owned by mallory": distinct, sorted in the database's collation, at most 5.
///
/// Trusted: superusers; for an owner that is not one, the owner itself; the roles named in
/// `trusted_roles`. Built-in objects (below FirstNormalObjectId) are trusted whoever owns them.
pub fn untrusted(objects: &Objects, owner: Oid, trusted_roles: &[String]) -> Vec<String> {
    // SAFETY: catalog reads of this backend inside its transaction (syscache lookups released
    // at once, index scans opened and closed here); strings come from palloc'd C strings.
    unsafe {
        // What other sessions committed is in the caches below before anything is read (a
        // query's snapshot would see it; a syscache entry is only refreshed by the messages).
        pg_sys::AcceptInvalidationMessages();
        let owner_is_superuser = role(owner).is_some_and(|r| r.1);
        let trusts = |role_oid: Oid| {
            role(role_oid).map(|(name, superuser)| {
                let trusted = superuser
                    || (role_oid == owner && !owner_is_superuser)
                    || trusted_roles.contains(&name);
                (name, trusted)
            })
        };

        let planned = planned_with(&closure(objects.relations, inheritors));
        let mut operators: HashSet<Oid> = objects.operators.iter().copied().collect();
        let mut functions: HashSet<Oid> = objects.functions.iter().copied().collect();
        let mut type_seeds: HashSet<Oid> = objects.types.iter().copied().collect();
        for (class, oid) in planned {
            if class == pg_sys::OperatorRelationId {
                operators.insert(oid);
            } else if class == pg_sys::ProcedureRelationId {
                functions.insert(oid);
            } else if class == pg_sys::TypeRelationId {
                type_seeds.insert(oid);
            }
        }
        for f in objects.functions {
            if let Some(parts) = aggregate(*f) {
                functions.extend(parts.support);
                operators.extend(parts.sort_operator);
                type_seeds.extend(parts.state_types);
            }
        }
        let operators = closure(&operators.into_iter().collect::<Vec<_>>(), operator_links);
        for o in &operators {
            functions.extend(operator_functions(*o));
        }
        let types = closure(&type_seeds.into_iter().collect::<Vec<_>>(), type_parts);
        for t in &types {
            functions.extend(type_functions(*t));
        }

        let mut found: BTreeSet<String> = BTreeSet::new();
        let mut note = |what: String, oid: Oid, owner_oid: Oid| {
            if oid.to_u32() < pg_sys::FirstNormalObjectId {
                return;
            }
            if let Some((name, false)) = trusts(owner_oid) {
                found.insert(format!("{what}, owned by {}", quote_ident(&name)));
            }
        };
        for f in &functions {
            if let Some(owner_oid) = cached(pg_sys::SysCacheIdentifier::PROCOID, *f, |t| {
                (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_proc>(t)).proowner
            }) {
                note(
                    format!("function {}", owned(pg_sys::format_procedure(*f))),
                    *f,
                    owner_oid,
                );
            }
        }
        for o in &operators {
            if let Some(owner_oid) = cached(pg_sys::SysCacheIdentifier::OPEROID, *o, |t| {
                (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_operator>(t)).oprowner
            }) {
                note(
                    format!("operator {}", owned(pg_sys::format_operator(*o))),
                    *o,
                    owner_oid,
                );
            }
        }
        for r in objects.relations {
            let row = cached(pg_sys::SysCacheIdentifier::RELOID, *r, |t| {
                let c = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(t);
                (c.relkind as u8, c.relhasrules, c.relowner)
            });
            let Some((kind, has_rules, owner_oid)) = row else {
                continue;
            };
            let policies = objects.with_policies.contains(r);
            let (label, suffix) = match kind {
                b'v' => ("view", ""),
                b'f' => ("foreign table", ""),
                _ if policies => ("table", " (its row-level security policies)"),
                _ if has_rules => ("table", " (its rules)"),
                _ => continue,
            };
            note(format!("{label} {}{suffix}", regclass(*r)), *r, owner_oid);
        }
        for t in &types {
            let domain_owner = cached(pg_sys::SysCacheIdentifier::TYPEOID, *t, |tup| {
                let y = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_type>(tup);
                (y.typtype as u8 == b'd').then_some(y.typowner)
            });
            if let Some(Some(owner_oid)) = domain_owner {
                note(
                    format!("domain {}", owned(pg_sys::format_type_be(*t))),
                    *t,
                    owner_oid,
                );
            }
        }
        let mut found: Vec<String> = found.into_iter().collect();
        found.sort_by(|a, b| collated(a, b));
        found.truncate(5);
        found
    }
}

/// A role's name and whether it is a superuser; None when there is no such role.
///
/// # Safety
/// Inside a transaction.
unsafe fn role(oid: Oid) -> Option<(String, bool)> {
    // SAFETY: as the caller promises; the tuple is a pg_authid row.
    unsafe {
        cached(pg_sys::SysCacheIdentifier::AUTHOID, oid, |t| {
            let a = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_authid>(t);
            (
                CStr::from_ptr(a.rolname.data.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
                a.rolsuper,
            )
        })
    }
}

pub fn is_superuser(oid: Oid) -> bool {
    // SAFETY: called inside the vetting's transaction.
    unsafe { role(oid).is_some_and(|r| r.1) }
}

/// `read` applied to the syscache row of `oid` in `cache`, None when there is none.
///
/// # Safety
/// Inside a transaction; `read` reads the row as the cache's catalog struct only.
unsafe fn cached<R>(
    cache: pg_sys::SysCacheIdentifier::Type,
    oid: Oid,
    read: impl FnOnce(pg_sys::HeapTuple) -> R,
) -> Option<R> {
    // SAFETY: as the caller promises; the tuple is released before returning.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(cache as i32, pg_sys::Datum::from(oid));
        if tuple.is_null() {
            return None;
        }
        let value = read(tuple);
        pg_sys::ReleaseSysCache(tuple);
        Some(value)
    }
}

/// Every row of `catalog` whose columns (`keys`: column number in the catalog, not in the
/// index, as systable_beginscan wants) equal the oids, read through `index` (whose leading
/// columns they are), passed to `each` (catalog snapshot, as the syscaches use).
///
/// # Safety
/// Inside a transaction; `index` is an index of `catalog` leading with those oid columns.
unsafe fn scan(
    catalog: Oid,
    index: Oid,
    keys: &[(pg_sys::AttrNumber, Oid)],
    mut each: impl FnMut(pg_sys::HeapTuple),
) {
    // SAFETY: as the caller promises; the scan and the relation are closed before returning
    // (on an error, the transaction's abort releases both).
    unsafe {
        let mut scan_keys: [pg_sys::ScanKeyData; 2] = std::mem::zeroed();
        assert!(keys.len() <= scan_keys.len());
        for (i, (column, key)) in keys.iter().enumerate() {
            pg_sys::ScanKeyInit(
                &mut scan_keys[i],
                *column,
                pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                Oid::from(pg_sys::F_OIDEQ),
                pg_sys::Datum::from(*key),
            );
        }
        let rel = pg_sys::table_open(catalog, pg_sys::AccessShareLock as i32);
        let sscan = pg_sys::systable_beginscan(
            rel,
            index,
            true,
            std::ptr::null_mut(),
            keys.len() as i32,
            scan_keys.as_mut_ptr(),
        );
        loop {
            let tuple = pg_sys::systable_getnext(sscan);
            if tuple.is_null() {
                break;
            }
            each(tuple);
        }
        pg_sys::systable_endscan(sscan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
    }
}

/// The first column (an oid) of each row of `catalog` whose `column` is `key`, through `index`.
///
/// # Safety
/// As `scan`; the catalog's first column is an oid.
unsafe fn first_oids(catalog: Oid, index: Oid, column: pg_sys::AttrNumber, key: Oid) -> Vec<Oid> {
    let mut out = Vec::new();
    // SAFETY: as the caller promises.
    unsafe {
        scan(catalog, index, &[(column, key)], |t| {
            out.push(*pg_sys::heap_tuple_get_struct::<Oid>(t))
        })
    };
    out
}

/// `seeds` and everything `next` reaches from them, each once.
unsafe fn closure(seeds: &[Oid], next: unsafe fn(Oid) -> Vec<Oid>) -> HashSet<Oid> {
    let mut all: HashSet<Oid> = seeds.iter().copied().collect();
    let mut todo: Vec<Oid> = all.iter().copied().collect();
    while let Some(oid) = todo.pop() {
        // SAFETY: `next` is one of this module's catalog reads, inside the transaction.
        for n in unsafe { next(oid) } {
            if n != pg_sys::InvalidOid && all.insert(n) {
                todo.push(n);
            }
        }
    }
    all
}

/// Inheritance children and partitions of a relation (pg_inherits: inhrelid, inhparent).
unsafe fn inheritors(parent: Oid) -> Vec<Oid> {
    // SAFETY: pg_inherits' first column is inhrelid; its parent index leads with inhparent.
    unsafe {
        first_oids(
            INHERITS_RELATION_ID,
            INHERITS_PARENT_INDEX_ID,
            INHPARENT,
            parent,
        )
    }
}

/// What a value of the type holds: its base type, element, attributes, range subtype, and
/// for a multirange its range.
unsafe fn type_parts(t: Oid) -> Vec<Oid> {
    // SAFETY: catalog reads inside the transaction; rows read as their catalogs' structs.
    unsafe {
        let Some((base, elem, typrelid)) = cached(pg_sys::SysCacheIdentifier::TYPEOID, t, |tup| {
            let y = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_type>(tup);
            (y.typbasetype, y.typelem, y.typrelid)
        }) else {
            return Vec::new();
        };
        let mut parts = vec![base, elem];
        if typrelid != pg_sys::InvalidOid {
            scan(
                pg_sys::AttributeRelationId,
                Oid::from(pg_sys::AttributeRelidNumIndexId),
                &[(ATTRELID, typrelid)],
                |tup| {
                    let a = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_attribute>(tup);
                    if a.attnum > 0 && !a.attisdropped {
                        parts.push(a.atttypid);
                    }
                },
            );
        }
        if let Some(sub) = cached(pg_sys::SysCacheIdentifier::RANGETYPE, t, |tup| {
            (*pg_sys::heap_tuple_get_struct::<RangeRow>(tup)).rngsubtype
        }) {
            parts.push(sub);
        }
        parts.push(pg_sys::get_multirange_range(t));
        parts
    }
}

/// The type's I/O, typmod and analyze functions, a range's canonical and subdiff functions,
/// and the functions a domain's constraints call.
unsafe fn type_functions(t: Oid) -> Vec<Oid> {
    // SAFETY: catalog reads inside the transaction; rows read as their catalogs' structs.
    unsafe {
        let mut out = cached(pg_sys::SysCacheIdentifier::TYPEOID, t, |tup| {
            let y = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_type>(tup);
            vec![
                y.typinput,
                y.typoutput,
                y.typreceive,
                y.typsend,
                y.typmodin,
                y.typmodout,
                y.typanalyze,
            ]
        })
        .unwrap_or_default();
        if let Some(range) = cached(pg_sys::SysCacheIdentifier::RANGETYPE, t, |tup| {
            let r = &*pg_sys::heap_tuple_get_struct::<RangeRow>(tup);
            [r.rngcanonical, r.rngsubdiff]
        }) {
            out.extend(range);
        }
        for constraint in first_oids(
            CONSTRAINT_RELATION_ID,
            CONSTRAINT_TYPID_INDEX_ID,
            CONTYPID,
            t,
        ) {
            out.extend(
                depends_on(CONSTRAINT_RELATION_ID, constraint)
                    .into_iter()
                    .filter(|d| d.0 == pg_sys::ProcedureRelationId)
                    .map(|d| d.1),
            );
        }
        out.retain(|f| *f != pg_sys::InvalidOid);
        out
    }
}

/// What an aggregate runs besides itself.
struct Aggregate {
    /// Transition, final, combine, (de)serialization and moving-aggregate functions.
    support: Vec<Oid>,
    /// MIN/MAX's sort operator (planagg.c plans an index scan ordered by it).
    sort_operator: Option<Oid>,
    /// Transition state types: planning reads the initial value through the type's input
    /// function (preprocess_aggref -> GetAggInitVal), so a domain's constraints run there.
    state_types: Vec<Oid>,
}

/// What the aggregate `f` runs; None when `f` is not an aggregate.
unsafe fn aggregate(f: Oid) -> Option<Aggregate> {
    let valid = |oids: &[Oid]| -> Vec<Oid> {
        oids.iter()
            .copied()
            .filter(|o| *o != pg_sys::InvalidOid)
            .collect()
    };
    // SAFETY: a pg_aggregate row read as its struct, inside the transaction.
    unsafe {
        cached(pg_sys::SysCacheIdentifier::AGGFNOID, f, |t| {
            let a = &*pg_sys::heap_tuple_get_struct::<AggregateRow>(t);
            Aggregate {
                support: valid(&a.support),
                sort_operator: valid(&[a.aggsortop]).pop(),
                state_types: valid(&[a.aggtranstype, a.aggmtranstype]),
            }
        })
    }
}

/// An operator's function and its restriction and join estimators.
unsafe fn operator_functions(o: Oid) -> Vec<Oid> {
    // SAFETY: a pg_operator row read as its struct, inside the transaction.
    unsafe {
        cached(pg_sys::SysCacheIdentifier::OPEROID, o, |t| {
            let op = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_operator>(t);
            [op.oprcode, op.oprrest, op.oprjoin]
        })
    }
    .map(|s| s.into_iter().filter(|f| *f != pg_sys::InvalidOid).collect())
    .unwrap_or_default()
}

/// The operators the planner may put in an operator's place: its commutator (operands
/// swapped to match an index or estimate a selectivity) and its negator (`NOT (a op b)`
/// simplified to `a negator b`, then estimated and run).
unsafe fn operator_links(o: Oid) -> Vec<Oid> {
    // SAFETY: a pg_operator row read as its struct, inside the transaction.
    unsafe {
        cached(pg_sys::SysCacheIdentifier::OPEROID, o, |t| {
            let op = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_operator>(t);
            vec![op.oprcom, op.oprnegate]
        })
    }
    .unwrap_or_default()
}

/// What the object `(class, objid)` depends on, as (refclassid, refobjid), any sub-object.
unsafe fn depends_on(class: Oid, objid: Oid) -> Vec<(Oid, Oid)> {
    let mut out = Vec::new();
    // SAFETY: pg_depend's depender index leads with (classid, objid); rows read as DependRow.
    unsafe {
        scan(
            DEPEND_RELATION_ID,
            DEPEND_DEPENDER_INDEX_ID,
            &[(DEP_CLASSID, class), (DEP_OBJID, objid)],
            |t| {
                let d = &*pg_sys::heap_tuple_get_struct::<DependRow>(t);
                out.push((d.refclassid, d.refobjid));
            },
        )
    };
    out
}

/// What the planner folds from these relations (`relations`: those read, with their
/// inheritance children): the functions and operators the relation itself depends on, and
/// everything its indexes (expressions, predicates), constraints and extended statistics
/// depend on. As (refclassid, refobjid).
unsafe fn planned_with(relations: &HashSet<Oid>) -> Vec<(Oid, Oid)> {
    let mut out = Vec::new();
    // SAFETY: catalog reads inside the transaction; pg_index, pg_constraint and
    // pg_statistic_ext rows read for their oids only.
    unsafe {
        for rel in relations {
            out.extend(
                depends_on(pg_sys::RelationRelationId, *rel)
                    .into_iter()
                    .filter(|d| {
                        d.0 == pg_sys::ProcedureRelationId || d.0 == pg_sys::OperatorRelationId
                    }),
            );
            scan(
                pg_sys::IndexRelationId,
                Oid::from(pg_sys::IndexIndrelidIndexId),
                &[(INDRELID, *rel)],
                |t| {
                    let index =
                        (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_index>(t)).indexrelid;
                    out.extend(depends_on(pg_sys::RelationRelationId, index));
                },
            );
            for c in first_oids(
                CONSTRAINT_RELATION_ID,
                CONSTRAINT_RELID_TYPID_NAME_INDEX_ID,
                CONRELID,
                *rel,
            ) {
                out.extend(depends_on(CONSTRAINT_RELATION_ID, c));
            }
            for s in first_oids(
                STATISTIC_EXT_RELATION_ID,
                STATISTIC_EXT_RELID_INDEX_ID,
                STXRELID,
                *rel,
            ) {
                out.extend(depends_on(STATISTIC_EXT_RELATION_ID, s));
            }
        }
    }
    out
}

/// A palloc'd C string as a String.
unsafe fn owned(s: *const c_char) -> String {
    // SAFETY: PostgreSQL's formatting functions return valid NUL-terminated strings.
    unsafe { CStr::from_ptr(s).to_string_lossy().into_owned() }
}

/// The relation's name as `oid::regclass::text` gives it (schema-qualified when not visible).
unsafe fn regclass(oid: Oid) -> String {
    // SAFETY: regclassout takes an oid and returns a cstring.
    unsafe {
        let datum = pg_sys::OidFunctionCall1Coll(
            Oid::from(pg_sys::F_REGCLASSOUT),
            pg_sys::InvalidOid,
            pg_sys::Datum::from(oid),
        );
        owned(datum.cast_mut_ptr::<c_char>())
    }
}

fn quote_ident(name: &str) -> String {
    let c = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: quote_identifier returns its argument or a palloc'd quoted copy.
    unsafe { owned(pg_sys::quote_identifier(c.as_ptr())) }
}

/// The order of `ORDER BY` on text in the database's default collation.
fn collated(a: &str, b: &str) -> std::cmp::Ordering {
    // SAFETY: varstr_cmp reads both byte ranges only.
    let c = unsafe {
        pg_sys::varstr_cmp(
            a.as_ptr().cast(),
            a.len() as i32,
            b.as_ptr().cast(),
            b.len() as i32,
            pg_sys::DEFAULT_COLLATION_OID,
        )
    };
    c.cmp(&0)
}
