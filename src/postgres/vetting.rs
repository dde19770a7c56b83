//! The one door to running anything as a statement's owner: a `Vetted` value, which only this
//! module can make, and only after it has checked what will run.
//!
//! Why: replaying a statement plans it (planning folds immutable functions and calls stable
//! ones to estimate selectivity) and, in real mode, runs it. What it runs is not fixed when the
//! statement ran: the owner of a function, view or table rule can redefine it later under the
//! same OID (`CREATE OR REPLACE FUNCTION`, `CREATE OR REPLACE VIEW`, a `_RETURN` rule that
//! turns a table into a view), and the replay would run the new code with the rights of the
//! statement's owner, a superuser's included. So before anything is planned, the statement is
//! resolved exactly as PostgreSQL will execute it (parse analysis and the rewriter, through the
//! PREPARE the replay makes anyway: views and rules expanded, row-level security quals added),
//! everything in it that can run code is collected, and the replay goes on only when every
//! one of those objects belongs to a role the statement's owner trusts:
//! - the owner itself and superusers (for a superuser's statement: superusers only);
//! - built-in objects count as trusted (the bootstrap superuser owns them).
//!
//! Collected: functions (also operators' functions and their estimators, aggregates' support
//! functions, sort operators and transition types, casts, type input/output functions),
//! operators (also those of ORDER BY, GROUP BY and DISTINCT, and their commutators and
//! negators, which the planner may put in their place), views, relations whose rules
//! or row-level security policies the statement uses, foreign tables, and types the statement
//! coerces values to (domains with their constraints; the parameters' types, whose input
//! functions and domain checks run on the sampled values). Anything else is refused with the
//! object and its owner named.
//!
//! Why this is enough between the check and the EXPLAIN that follows: the check reads the
//! query tree PostgreSQL will plan, under the locks parse analysis took (held until the job's
//! subtransaction ends, so nobody can redefine a view, rule or policy in between), and an
//! object owned by a trusted role can only be redefined by that role. See docs/security-model.md.

use crate::postgres::guarded::Failure;
use crate::postgres::gucs;
use crate::postgres::replay::Context;
use crate::postgres::settings::{self, Setting};
use crate::postgres::vetting_catalog;
use pgrx::list::PgList;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{c_void, CString};
use std::panic::AssertUnwindSafe;

/// Permission to run code as a context's owner, inside a security-restricted operation, with
/// its search_path. Only this module's constructors make one; each says why what will run is
/// safe.
pub struct Vetted<'a> {
    context: &'a Context,
}

impl<'a> Vetted<'a> {
    /// The prepared statement `name` (prepared in this session as the context's owner): allowed
    /// when everything it would run belongs to a role its owner trusts; Err names what does not.
    pub fn prepared(context: &'a Context, name: &str) -> Result<Vetted<'a>, Failure> {
        let uses = collect(name)?;
        let found = untrusted(&uses, context.owner.oid);
        if found.is_empty() {
            return Ok(Vetted { context });
        }
        Err(Failure::new(
            "42501",
            format!(
                "the statement uses {}: owned by roles its own role {} does not trust (only \
                     itself and superusers{}): it is not replayed, so none of that code runs \
                     with {}'s rights",
                found.join("; "),
                context.owner.name,
                if owner_is_superuser(context.owner.oid) {
                    "; for a superuser's statement, superusers only"
                } else {
                    ""
                },
                context.owner.name
            ),
        ))
    }

    /// An index optidb wrote itself (optidb_core::index_expression: only pg_catalog built-ins,
    /// schema-qualified, over the table's own columns), built or created hypothetically with a
    /// search_path of pg_catalog only.
    pub fn optidb_index(context: &'a Context) -> Vetted<'a> {
        Vetted { context }
    }

    /// Catalog lookups that run no code of anyone's (to_regclass as the owner, to see what its
    /// privileges let a name resolve to).
    pub fn catalog_lookup(context: &'a Context) -> Vetted<'a> {
        Vetted { context }
    }

    /// Run `work` as the owner, restricted, with the context's search_path. The caller's
    /// identity, security context and settings are restored however `work` ends.
    pub fn run<R>(&self, work: impl FnOnce() -> R) -> R {
        as_owner_flagged(
            self.context,
            pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            work,
        )
    }
}

/// Parse analysis alone as the owner (a PREPARE, which PostgreSQL refuses inside a
/// security-restricted operation): names resolve with the owner's privileges and no code of
/// the statement runs (functions are only looked up), so it needs no vetting; SET ROLE is
/// refused (SECURITY_LOCAL_USERID_CHANGE).
pub fn parse_as_owner<R>(context: &Context, work: impl FnOnce() -> R) -> R {
    as_owner_flagged(context, pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32, work)
}

fn as_owner_flagged<R>(ctx: &Context, flag: i32, work: impl FnOnce() -> R) -> R {
    let (mut saved_user, mut saved_security) = (pg_sys::InvalidOid, 0);
    // SAFETY: guarded calls on this backend's own identity. GetUserIdAndSecContext writes the
    // caller's user and security context into the two locals; SetUserIdAndSecContext then
    // switches to the owner's role (an oid found in pg_roles) with the restriction added to
    // the caller's flags, and `finally` below restores the saved pair however `work` ends, as
    // PostgreSQL's own security-restricted operations do.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_security);
        pg_sys::SetUserIdAndSecContext(ctx.owner.oid, saved_security | flag);
    }
    PgTryBuilder::new(AssertUnwindSafe(|| {
        settings::with(&[Setting::user("search_path", &ctx.search_path)], work)
    }))
    // SAFETY: a guarded call restoring the user and security context saved above.
    .finally(|| unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_security) })
    .execute()
}

/// What a resolved statement can run, by catalog object.
#[derive(Default, Debug)]
struct Uses {
    functions: Vec<pg_sys::Oid>,
    operators: Vec<pg_sys::Oid>,
    /// Relations with whether row-level security quals of theirs were added.
    relations: Vec<(pg_sys::Oid, bool)>,
    types: Vec<pg_sys::Oid>,
}

/// Walk the analyzed and rewritten query trees of prepared statement `name`.
fn collect(name: &str) -> Result<Uses, Failure> {
    let cname = CString::new(name).map_err(|_| Failure::new("XX000", "bad statement name"))?;
    let mut uses = Uses::default();
    // SAFETY: FetchPreparedStatement raises if the name is unknown (throwError); the plan
    // source and its query list belong to this session's prepared statement, which lives
    // until our DEALLOCATE, after this walk. The walkers read nodes only.
    unsafe {
        let prepared = pg_sys::FetchPreparedStatement(cname.as_ptr(), true);
        let source = (*prepared).plansource;
        let params = (*source).param_types;
        for i in 0..(*source).num_params.max(0) as usize {
            uses.types.push(*params.add(i));
        }
        let queries = PgList::<pg_sys::Query>::from_pg((*source).query_list);
        for query in queries.iter_ptr() {
            walk(query.cast(), &mut uses);
        }
    }
    Ok(uses)
}

/// # Safety
/// `node` is null or a valid node tree of this backend.
unsafe fn walk(node: *mut pg_sys::Node, uses: &mut Uses) {
    // SAFETY: as the caller promises; the context pointer is `uses`, alive for the walk.
    unsafe {
        walker(node, (uses as *mut Uses).cast());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn add_function(func: pg_sys::Oid, context: *mut c_void) -> bool {
    // SAFETY: `context` is the `Uses` the walk was started with.
    unsafe { (*context.cast::<Uses>()).functions.push(func) };
    false
}

/// One node: what it calls, then its children. Query nodes go through query_tree_walker with
/// their range tables (views already expanded into subqueries, security quals attached).
#[pg_guard]
unsafe extern "C-unwind" fn walker(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
    use pg_sys::NodeTag::*;
    if node.is_null() {
        return false;
    }
    // SAFETY: `node` is a valid node (the walkers pass only those) and `context` the `Uses`
    // of this walk; each cast matches the node's tag.
    unsafe {
        let uses = &mut *context.cast::<Uses>();
        pg_sys::check_functions_in_node(node, Some(add_function), context);
        match (*node).type_ {
            T_Query => {
                let query = node.cast::<pg_sys::Query>();
                sort_operators(query, uses);
                return pg_sys::query_tree_walker(
                    query,
                    Some(walker),
                    context,
                    pg_sys::QTW_EXAMINE_RTES_BEFORE as i32,
                );
            }
            T_RangeTblEntry => {
                let rte = node.cast::<pg_sys::RangeTblEntry>();
                // A relation, or (PostgreSQL 16+) a view expanded into a subquery that keeps
                // its relid; 15 keeps the view's oid in the subquery's OLD entry instead.
                if (*rte).relid != pg_sys::InvalidOid {
                    uses.relations
                        .push(((*rte).relid, !(*rte).securityQuals.is_null()));
                }
                // query_tree_walker walks the entry's contents itself.
                return false;
            }
            T_OpExpr | T_DistinctExpr | T_NullIfExpr => {
                uses.operators.push((*node.cast::<pg_sys::OpExpr>()).opno);
            }
            T_ScalarArrayOpExpr => {
                uses.operators
                    .push((*node.cast::<pg_sys::ScalarArrayOpExpr>()).opno);
            }
            T_RowCompareExpr => {
                let opnos =
                    PgList::<pg_sys::Oid>::from_pg((*node.cast::<pg_sys::RowCompareExpr>()).opnos);
                uses.operators.extend(opnos.iter_oid());
            }
            // Every value converted, built or returned: its type's functions and, for a
            // domain (or a type holding one), its constraints run on it.
            T_CoerceToDomain => {
                uses.types
                    .push((*node.cast::<pg_sys::CoerceToDomain>()).resulttype);
            }
            T_CoerceViaIO => uses
                .types
                .push((*node.cast::<pg_sys::CoerceViaIO>()).resulttype),
            T_ArrayCoerceExpr => uses
                .types
                .push((*node.cast::<pg_sys::ArrayCoerceExpr>()).resulttype),
            T_RelabelType => uses
                .types
                .push((*node.cast::<pg_sys::RelabelType>()).resulttype),
            T_ConvertRowtypeExpr => uses
                .types
                .push((*node.cast::<pg_sys::ConvertRowtypeExpr>()).resulttype),
            T_FuncExpr => uses
                .types
                .push((*node.cast::<pg_sys::FuncExpr>()).funcresulttype),
            T_Aggref => uses.types.push((*node.cast::<pg_sys::Aggref>()).aggtype),
            T_WindowFunc => uses
                .types
                .push((*node.cast::<pg_sys::WindowFunc>()).wintype),
            T_RowExpr => uses
                .types
                .push((*node.cast::<pg_sys::RowExpr>()).row_typeid),
            T_ArrayExpr => uses
                .types
                .push((*node.cast::<pg_sys::ArrayExpr>()).array_typeid),
            T_FieldSelect => uses
                .types
                .push((*node.cast::<pg_sys::FieldSelect>()).resulttype),
            T_FieldStore => uses
                .types
                .push((*node.cast::<pg_sys::FieldStore>()).resulttype),
            T_Const => uses.types.push((*node.cast::<pg_sys::Const>()).consttype),
            T_Param => uses.types.push((*node.cast::<pg_sys::Param>()).paramtype),
            // Column definition lists (`f(...) AS x(a type)`, XMLTABLE columns): values are
            // converted to those types.
            T_RangeTblFunction => {
                let f = node.cast::<pg_sys::RangeTblFunction>();
                uses.types
                    .extend(PgList::<pg_sys::Oid>::from_pg((*f).funccoltypes).iter_oid());
            }
            T_TableFunc => {
                let f = node.cast::<pg_sys::TableFunc>();
                uses.types
                    .extend(PgList::<pg_sys::Oid>::from_pg((*f).coltypes).iter_oid());
            }
            T_SetOperationStmt => {
                let op = node.cast::<pg_sys::SetOperationStmt>();
                uses.types
                    .extend(PgList::<pg_sys::Oid>::from_pg((*op).colTypes).iter_oid());
                sort_clause_operators((*op).groupClauses, uses);
            }
            _ => {}
        }
        pg_sys::expression_tree_walker(node, Some(walker), context)
    }
}

/// The operators ORDER BY, GROUP BY, DISTINCT and window clauses sort and compare with (not
/// expressions, so the walkers do not visit them).
///
/// # Safety
/// `query` is a valid Query.
unsafe fn sort_operators(query: *mut pg_sys::Query, uses: &mut Uses) {
    // SAFETY: lists of SortGroupClause / WindowClause nodes of a valid Query.
    unsafe {
        sort_clause_operators((*query).sortClause, uses);
        sort_clause_operators((*query).groupClause, uses);
        sort_clause_operators((*query).distinctClause, uses);
        for w in PgList::<pg_sys::WindowClause>::from_pg((*query).windowClause).iter_ptr() {
            sort_clause_operators((*w).partitionClause, uses);
            sort_clause_operators((*w).orderClause, uses);
        }
    }
}

/// # Safety
/// `list` is a valid list of SortGroupClause nodes (or NIL).
unsafe fn sort_clause_operators(list: *mut pg_sys::List, uses: &mut Uses) {
    // SAFETY: as the caller promises.
    unsafe {
        for c in PgList::<pg_sys::SortGroupClause>::from_pg(list).iter_ptr() {
            uses.operators.extend([(*c).sortop, (*c).eqop]);
        }
    }
}

fn owner_is_superuser(owner: pg_sys::Oid) -> bool {
    vetting_catalog::is_superuser(owner)
}

/// The objects of `uses` owned by a role that `owner` does not trust, described as
/// "function m.f(integer), owned by mallory" (at most a few).
///
/// Trusted: superusers; for an owner that is not one, the owner itself; the roles a superuser
/// listed in `optidb.trusted_roles`. Built-in objects (below FirstNormalObjectId) are trusted
/// whoever owns them. What else counts (what the planner folds from the relations read, what a
/// type holds and runs): vetting_catalog.rs.
fn untrusted(uses: &Uses, owner: pg_sys::Oid) -> Vec<String> {
    let oids = |v: &mut dyn Iterator<Item = pg_sys::Oid>| {
        let mut v: Vec<pg_sys::Oid> = v
            .filter(|o| o.to_u32() >= pg_sys::FirstNormalObjectId)
            .collect();
        v.sort_by_key(|o| o.to_u32());
        v.dedup();
        v
    };
    let functions = oids(&mut uses.functions.iter().copied());
    let operators = oids(&mut uses.operators.iter().copied());
    let relations = oids(&mut uses.relations.iter().map(|r| r.0));
    let with_policies = oids(&mut uses.relations.iter().filter(|r| r.1).map(|r| r.0));
    let types = oids(&mut uses.types.iter().copied());
    vetting_catalog::untrusted(
        &vetting_catalog::Objects {
            functions: &functions,
            operators: &operators,
            relations: &relations,
            with_policies: &with_policies,
            types: &types,
        },
        owner,
        &gucs::trusted_roles(),
    )
}
