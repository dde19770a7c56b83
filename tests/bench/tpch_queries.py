"""The 22 TPC-H query templates and their substitution parameters, for tpch_advice_bench.py.

The query text is the functional query definition of TPC-H (spec clause 2.4.N, N = 1..22), as
the TPC's dbgen kit distributes it (public copy: gregrahn/tpch-kit, dbgen/queries/N.sql), in
PostgreSQL syntax, with the kit's placeholders `:1`, `:2`, ... where qgen puts its parameters and
the row limit of the spec (`:n` in the kit) as LIMIT. Differences from the kit's text:
- Q1: `interval ':1' day` (the kit writes `day (3)`, a precision PostgreSQL does not take there);
- Q15: the spec's variant with a WITH clause instead of CREATE VIEW / DROP VIEW, so each execution
  is one statement.

The parameters follow the substitution rules of each query's clause 2.4.N.3 ("Substitution
Parameters"); `params(n, rng, dom)` draws one set. The value lists the rules name (nations,
regions, segments, colors, type and container syllables, ship modes) are read from the loaded
data (`dom`), which dbgen generated from those same lists; the words of Q13 are the spec's.
"""

import datetime as dt

TEMPLATES = {
    1: """select l_returnflag, l_linestatus, sum(l_quantity) as sum_qty,
  sum(l_extendedprice) as sum_base_price, sum(l_extendedprice * (1 - l_discount)) as sum_disc_price,
  sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) as sum_charge, avg(l_quantity) as avg_qty,
  avg(l_extendedprice) as avg_price, avg(l_discount) as avg_disc, count(*) as count_order
from lineitem
where l_shipdate <= date '1998-12-01' - interval ':1' day
group by l_returnflag, l_linestatus
order by l_returnflag, l_linestatus""",
    2: """select s_acctbal, s_name, n_name, p_partkey, p_mfgr, s_address, s_phone, s_comment
from part, supplier, partsupp, nation, region
where p_partkey = ps_partkey and s_suppkey = ps_suppkey and p_size = :1 and p_type like '%:2'
  and s_nationkey = n_nationkey and n_regionkey = r_regionkey and r_name = ':3'
  and ps_supplycost = (
    select min(ps_supplycost) from partsupp, supplier, nation, region
    where p_partkey = ps_partkey and s_suppkey = ps_suppkey and s_nationkey = n_nationkey
      and n_regionkey = r_regionkey and r_name = ':3')
order by s_acctbal desc, n_name, s_name, p_partkey
limit 100""",
    3: """select l_orderkey, sum(l_extendedprice * (1 - l_discount)) as revenue, o_orderdate, o_shippriority
from customer, orders, lineitem
where c_mktsegment = ':1' and c_custkey = o_custkey and l_orderkey = o_orderkey
  and o_orderdate < date ':2' and l_shipdate > date ':2'
group by l_orderkey, o_orderdate, o_shippriority
order by revenue desc, o_orderdate
limit 10""",
    4: """select o_orderpriority, count(*) as order_count
from orders
where o_orderdate >= date ':1' and o_orderdate < date ':1' + interval '3' month
  and exists (select * from lineitem where l_orderkey = o_orderkey and l_commitdate < l_receiptdate)
group by o_orderpriority
order by o_orderpriority""",
    5: """select n_name, sum(l_extendedprice * (1 - l_discount)) as revenue
from customer, orders, lineitem, supplier, nation, region
where c_custkey = o_custkey and l_orderkey = o_orderkey and l_suppkey = s_suppkey
  and c_nationkey = s_nationkey and s_nationkey = n_nationkey and n_regionkey = r_regionkey
  and r_name = ':1' and o_orderdate >= date ':2' and o_orderdate < date ':2' + interval '1' year
group by n_name
order by revenue desc""",
    6: """select sum(l_extendedprice * l_discount) as revenue
from lineitem
where l_shipdate >= date ':1' and l_shipdate < date ':1' + interval '1' year
  and l_discount between :2 - 0.01 and :2 + 0.01 and l_quantity < :3""",
    7: """select supp_nation, cust_nation, l_year, sum(volume) as revenue
from (
  select n1.n_name as supp_nation, n2.n_name as cust_nation,
    extract(year from l_shipdate) as l_year, l_extendedprice * (1 - l_discount) as volume
  from supplier, lineitem, orders, customer, nation n1, nation n2
  where s_suppkey = l_suppkey and o_orderkey = l_orderkey and c_custkey = o_custkey
    and s_nationkey = n1.n_nationkey and c_nationkey = n2.n_nationkey
    and ((n1.n_name = ':1' and n2.n_name = ':2') or (n1.n_name = ':2' and n2.n_name = ':1'))
    and l_shipdate between date '1995-01-01' and date '1996-12-31'
) as shipping
group by supp_nation, cust_nation, l_year
order by supp_nation, cust_nation, l_year""",
    8: """select o_year, sum(case when nation = ':1' then volume else 0 end) / sum(volume) as mkt_share
from (
  select extract(year from o_orderdate) as o_year, l_extendedprice * (1 - l_discount) as volume,
    n2.n_name as nation
  from part, supplier, lineitem, orders, customer, nation n1, nation n2, region
  where p_partkey = l_partkey and s_suppkey = l_suppkey and l_orderkey = o_orderkey
    and o_custkey = c_custkey and c_nationkey = n1.n_nationkey and n1.n_regionkey = r_regionkey
    and r_name = ':2' and s_nationkey = n2.n_nationkey
    and o_orderdate between date '1995-01-01' and date '1996-12-31' and p_type = ':3'
) as all_nations
group by o_year
order by o_year""",
    9: """select nation, o_year, sum(amount) as sum_profit
from (
  select n_name as nation, extract(year from o_orderdate) as o_year,
    l_extendedprice * (1 - l_discount) - ps_supplycost * l_quantity as amount
  from part, supplier, lineitem, partsupp, orders, nation
  where s_suppkey = l_suppkey and ps_suppkey = l_suppkey and ps_partkey = l_partkey
    and p_partkey = l_partkey and o_orderkey = l_orderkey and s_nationkey = n_nationkey
    and p_name like '%:1%'
) as profit
group by nation, o_year
order by nation, o_year desc""",
    10: """select c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) as revenue, c_acctbal,
  n_name, c_address, c_phone, c_comment
from customer, orders, lineitem, nation
where c_custkey = o_custkey and l_orderkey = o_orderkey and o_orderdate >= date ':1'
  and o_orderdate < date ':1' + interval '3' month and l_returnflag = 'R'
  and c_nationkey = n_nationkey
group by c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
order by revenue desc
limit 20""",
    11: """select ps_partkey, sum(ps_supplycost * ps_availqty) as value
from partsupp, supplier, nation
where ps_suppkey = s_suppkey and s_nationkey = n_nationkey and n_name = ':1'
group by ps_partkey having sum(ps_supplycost * ps_availqty) > (
  select sum(ps_supplycost * ps_availqty) * :2 from partsupp, supplier, nation
  where ps_suppkey = s_suppkey and s_nationkey = n_nationkey and n_name = ':1')
order by value desc""",
    12: """select l_shipmode,
  sum(case when o_orderpriority = '1-URGENT' or o_orderpriority = '2-HIGH' then 1 else 0 end)
    as high_line_count,
  sum(case when o_orderpriority <> '1-URGENT' and o_orderpriority <> '2-HIGH' then 1 else 0 end)
    as low_line_count
from orders, lineitem
where o_orderkey = l_orderkey and l_shipmode in (':1', ':2') and l_commitdate < l_receiptdate
  and l_shipdate < l_commitdate and l_receiptdate >= date ':3'
  and l_receiptdate < date ':3' + interval '1' year
group by l_shipmode
order by l_shipmode""",
    13: """select c_count, count(*) as custdist
from (
  select c_custkey, count(o_orderkey)
  from customer left outer join orders on c_custkey = o_custkey and o_comment not like '%:1%:2%'
  group by c_custkey
) as c_orders (c_custkey, c_count)
group by c_count
order by custdist desc, c_count desc""",
    14: """select 100.00 * sum(case when p_type like 'PROMO%' then l_extendedprice * (1 - l_discount) else 0 end)
  / sum(l_extendedprice * (1 - l_discount)) as promo_revenue
from lineitem, part
where l_partkey = p_partkey and l_shipdate >= date ':1'
  and l_shipdate < date ':1' + interval '1' month""",
    15: """with revenue (supplier_no, total_revenue) as (
  select l_suppkey, sum(l_extendedprice * (1 - l_discount)) from lineitem
  where l_shipdate >= date ':1' and l_shipdate < date ':1' + interval '3' month
  group by l_suppkey)
select s_suppkey, s_name, s_address, s_phone, total_revenue
from supplier, revenue
where s_suppkey = supplier_no and total_revenue = (select max(total_revenue) from revenue)
order by s_suppkey""",
    16: """select p_brand, p_type, p_size, count(distinct ps_suppkey) as supplier_cnt
from partsupp, part
where p_partkey = ps_partkey and p_brand <> ':1' and p_type not like ':2%'
  and p_size in (:3, :4, :5, :6, :7, :8, :9, :10)
  and ps_suppkey not in (select s_suppkey from supplier where s_comment like '%Customer%Complaints%')
group by p_brand, p_type, p_size
order by supplier_cnt desc, p_brand, p_type, p_size""",
    17: """select sum(l_extendedprice) / 7.0 as avg_yearly
from lineitem, part
where p_partkey = l_partkey and p_brand = ':1' and p_container = ':2'
  and l_quantity < (select 0.2 * avg(l_quantity) from lineitem where l_partkey = p_partkey)""",
    18: """select c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice, sum(l_quantity)
from customer, orders, lineitem
where o_orderkey in (select l_orderkey from lineitem group by l_orderkey having sum(l_quantity) > :1)
  and c_custkey = o_custkey and o_orderkey = l_orderkey
group by c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice
order by o_totalprice desc, o_orderdate
limit 100""",
    19: """select sum(l_extendedprice * (1 - l_discount)) as revenue
from lineitem, part
where (p_partkey = l_partkey and p_brand = ':1'
    and p_container in ('SM CASE', 'SM BOX', 'SM PACK', 'SM PKG')
    and l_quantity >= :4 and l_quantity <= :4 + 10 and p_size between 1 and 5
    and l_shipmode in ('AIR', 'AIR REG') and l_shipinstruct = 'DELIVER IN PERSON')
  or (p_partkey = l_partkey and p_brand = ':2'
    and p_container in ('MED BAG', 'MED BOX', 'MED PKG', 'MED PACK')
    and l_quantity >= :5 and l_quantity <= :5 + 10 and p_size between 1 and 10
    and l_shipmode in ('AIR', 'AIR REG') and l_shipinstruct = 'DELIVER IN PERSON')
  or (p_partkey = l_partkey and p_brand = ':3'
    and p_container in ('LG CASE', 'LG BOX', 'LG PACK', 'LG PKG')
    and l_quantity >= :6 and l_quantity <= :6 + 10 and p_size between 1 and 15
    and l_shipmode in ('AIR', 'AIR REG') and l_shipinstruct = 'DELIVER IN PERSON')""",
    20: """select s_name, s_address
from supplier, nation
where s_suppkey in (
    select ps_suppkey from partsupp
    where ps_partkey in (select p_partkey from part where p_name like ':1%')
      and ps_availqty > (
        select 0.5 * sum(l_quantity) from lineitem
        where l_partkey = ps_partkey and l_suppkey = ps_suppkey
          and l_shipdate >= date ':2' and l_shipdate < date ':2' + interval '1' year))
  and s_nationkey = n_nationkey and n_name = ':3'
order by s_name""",
    21: """select s_name, count(*) as numwait
from supplier, lineitem l1, orders, nation
where s_suppkey = l1.l_suppkey and o_orderkey = l1.l_orderkey and o_orderstatus = 'F'
  and l1.l_receiptdate > l1.l_commitdate
  and exists (select * from lineitem l2
              where l2.l_orderkey = l1.l_orderkey and l2.l_suppkey <> l1.l_suppkey)
  and not exists (select * from lineitem l3
                  where l3.l_orderkey = l1.l_orderkey and l3.l_suppkey <> l1.l_suppkey
                    and l3.l_receiptdate > l3.l_commitdate)
  and s_nationkey = n_nationkey and n_name = ':1'
group by s_name
order by numwait desc, s_name
limit 100""",
    22: """select cntrycode, count(*) as numcust, sum(c_acctbal) as totacctbal
from (
  select substring(c_phone from 1 for 2) as cntrycode, c_acctbal
  from customer
  where substring(c_phone from 1 for 2) in (':1', ':2', ':3', ':4', ':5', ':6', ':7')
    and c_acctbal > (
      select avg(c_acctbal) from customer
      where c_acctbal > 0.00
        and substring(c_phone from 1 for 2) in (':1', ':2', ':3', ':4', ':5', ':6', ':7'))
    and not exists (select * from orders where o_custkey = c_custkey)
) as custsale
group by cntrycode
order by cntrycode""",
}

# The words of Q13's rule (2.4.13.3), not a list of the data.
Q13_WORD1 = ["special", "pending", "unusual", "express"]
Q13_WORD2 = ["packages", "requests", "accounts", "deposits"]

# What params() reads from the loaded data: name -> query returning one text column.
DOMAIN_SQL = {
    "nations": "SELECT n_name FROM nation ORDER BY n_nationkey",
    "regions": "SELECT r_name FROM region ORDER BY r_regionkey",
    "segments": "SELECT DISTINCT c_mktsegment FROM customer ORDER BY 1",
    "colors": "SELECT DISTINCT w FROM part, unnest(string_to_array(p_name, ' ')) w ORDER BY 1",
    "type1": "SELECT DISTINCT split_part(p_type, ' ', 1) FROM part ORDER BY 1",
    "type2": "SELECT DISTINCT split_part(p_type, ' ', 2) FROM part ORDER BY 1",
    "type3": "SELECT DISTINCT split_part(p_type, ' ', 3) FROM part ORDER BY 1",
    "container1": "SELECT DISTINCT split_part(p_container, ' ', 1) FROM part ORDER BY 1",
    "container2": "SELECT DISTINCT split_part(p_container, ' ', 2) FROM part ORDER BY 1",
    "shipmodes": "SELECT DISTINCT l_shipmode FROM lineitem ORDER BY 1",
    "nation_region": "SELECT n_name || '|' || r_name FROM nation JOIN region ON n_regionkey = r_regionkey",
}


def _month_start(rng, first, last):
    """First day of a month drawn uniformly from first..last, (year, month) pairs inclusive."""
    months = (last[0] - first[0]) * 12 + last[1] - first[1]
    k = rng.randint(0, months)
    y, m = divmod(first[1] - 1 + k, 12)
    return dt.date(first[0] + y, m + 1, 1).isoformat()


def _year_start(rng):
    return dt.date(rng.randint(1993, 1997), 1, 1).isoformat()


def _brand(rng):
    return "Brand#%d%d" % (rng.randint(1, 5), rng.randint(1, 5))


def params(n, rng, dom, scale):
    """One parameter set of template n (list of strings, :1 first), by its clause 2.4.n.3."""
    c = rng.choice
    if n == 1:  # DELTA in [60, 120]
        return [str(rng.randint(60, 120))]
    if n == 2:  # SIZE in [1, 50], TYPE a 3rd syllable, REGION
        return [str(rng.randint(1, 50)), c(dom["type3"]), c(dom["regions"])]
    if n == 3:  # SEGMENT, DATE a day of March 1995
        return [c(dom["segments"]), dt.date(1995, 3, rng.randint(1, 31)).isoformat()]
    if n == 4:  # DATE first of a month 1993-01 .. 1997-10
        return [_month_start(rng, (1993, 1), (1997, 10))]
    if n == 5:  # REGION, DATE Jan 1 of 1993..1997
        return [c(dom["regions"]), _year_start(rng)]
    if n == 6:  # DATE, DISCOUNT in [0.02, 0.09], QUANTITY in [24, 25]
        return [_year_start(rng), "0.0%d" % rng.randint(2, 9), str(rng.randint(24, 25))]
    if n == 7:  # two different nations
        a, b = rng.sample(dom["nations"], 2)
        return [a, b]
    if n == 8:  # NATION, its REGION, TYPE of 3 syllables
        nation, region = c(dom["nation_region"]).split("|")
        ptype = " ".join([c(dom["type1"]), c(dom["type2"]), c(dom["type3"])])
        return [nation, region, ptype]
    if n == 9:  # COLOR
        return [c(dom["colors"])]
    if n == 10:  # DATE first of a month 1993-02 .. 1995-01
        return [_month_start(rng, (1993, 2), (1995, 1))]
    if n == 11:  # NATION, FRACTION = 0.0001 / SF
        return [c(dom["nations"]), repr(0.0001 / scale)]
    if n == 12:  # two different ship modes, DATE Jan 1 of 1993..1997
        a, b = rng.sample(dom["shipmodes"], 2)
        return [a, b, _year_start(rng)]
    if n == 13:
        return [c(Q13_WORD1), c(Q13_WORD2)]
    if n == 14:  # DATE first of a month 1993-01 .. 1997-12
        return [_month_start(rng, (1993, 1), (1997, 12))]
    if n == 15:  # DATE first of a month 1993-01 .. 1997-10
        return [_month_start(rng, (1993, 1), (1997, 10))]
    if n == 16:  # BRAND, TYPE of 2 syllables, 8 different sizes in [1, 50]
        ptype = " ".join([c(dom["type1"]), c(dom["type2"])])
        return [_brand(rng), ptype] + [str(s) for s in rng.sample(range(1, 51), 8)]
    if n == 17:  # BRAND, CONTAINER of 2 syllables
        return [_brand(rng), " ".join([c(dom["container1"]), c(dom["container2"])])]
    if n == 18:  # QUANTITY in [312, 315]
        return [str(rng.randint(312, 315))]
    if n == 19:  # 3 brands, QUANTITY1..3 in [1,10], [10,20], [20,30]
        return [_brand(rng), _brand(rng), _brand(rng),
                str(rng.randint(1, 10)), str(rng.randint(10, 20)), str(rng.randint(20, 30))]
    if n == 20:  # COLOR, DATE Jan 1 of 1993..1997, NATION
        return [c(dom["colors"]), _year_start(rng), c(dom["nations"])]
    if n == 21:
        return [c(dom["nations"])]
    if n == 22:  # 7 different country codes: nation keys + 10
        return [str(k) for k in rng.sample(range(10, 10 + len(dom["nations"])), 7)]
    raise ValueError("no TPC-H template %d" % n)


def render(n, values):
    """The template with its placeholders replaced, highest number first (:10 before :1)."""
    sql = TEMPLATES[n]
    for i in range(len(values), 0, -1):
        sql = sql.replace(":%d" % i, values[i - 1].replace("'", "''"))
    return sql
