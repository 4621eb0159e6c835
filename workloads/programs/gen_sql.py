"""Write the sqlite3 program workload's SQL to the file named by argv[1]: a schema, a large transaction
of inserts, indexes, joins, aggregates, updates and deletes, whose printed results depend only on the
seed (the same under every allocator). Run on glibc in the setup step, not measured."""

import random
import sys
from pathlib import Path

ROWS = 120_000  # customers x orders: about 4 s of sqlite3 here, a few hundred MB of page cache churn
CUSTOMERS = 6_000
rng = random.Random(20240601)
out = Path(sys.argv[1]).open("w")  # noqa: SIM115 - closed at the end
w = out.write
w("PRAGMA journal_mode=WAL;\nPRAGMA cache_size=-16000;\n")
w("CREATE TABLE customer(id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, note TEXT);\n")
w(
    "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER, item TEXT, qty INTEGER, price REAL,"
    " memo BLOB);\n"
)
w("BEGIN;\n")
cities = [f"city{i:03d}" for i in range(97)]
for c in range(CUSTOMERS):
    name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(5, 40)))
    note = "x" * rng.randint(0, 600)
    w(f"INSERT INTO customer VALUES({c}, '{name}', '{rng.choice(cities)}', '{note}');\n")
for o in range(ROWS):
    item = f"item-{rng.randint(0, 4999):05d}"
    memo = rng.randbytes(rng.randint(0, 120)).hex()
    w(
        f"INSERT INTO orders VALUES({o}, {rng.randrange(CUSTOMERS)}, '{item}', {rng.randint(1, 9)},"
        f" {rng.randint(100, 99999) / 100}, x'{memo}');\n"
    )
w("COMMIT;\n")
w("CREATE INDEX orders_customer ON orders(customer);\n")
w("CREATE INDEX orders_item ON orders(item, qty);\n")
w("CREATE INDEX customer_city ON customer(city);\n")
w("SELECT 'rows', count(*), sum(qty) FROM orders;\n")
w(
    "SELECT 'top', c.city, count(*), round(sum(o.qty * o.price), 2) FROM orders o"
    " JOIN customer c ON c.id = o.customer GROUP BY c.city ORDER BY 4 DESC, 2 LIMIT 5;\n"
)
w("SELECT 'items', count(DISTINCT item), max(length(memo)) FROM orders;\n")
w(
    "SELECT 'names', count(*), sum(length(name)) FROM customer WHERE id IN"
    " (SELECT customer FROM orders WHERE qty = 9 GROUP BY customer HAVING count(*) > 3);\n"
)
w("BEGIN;\nUPDATE orders SET qty = qty + 1, memo = memo || memo WHERE item < 'item-01000';\n")
w("DELETE FROM orders WHERE price < 50;\nCOMMIT;\n")
w("SELECT 'after', count(*), sum(qty), sum(length(memo)) FROM orders;\n")
w(
    "SELECT 'group', group_concat(city, ',') FROM"
    " (SELECT DISTINCT city FROM customer ORDER BY city LIMIT 20);\n"
)
w("CREATE TABLE big AS SELECT o.*, c.name, c.note FROM orders o JOIN customer c ON c.id = o.customer;\n")
w("SELECT 'big', count(*), sum(length(note)) FROM big;\n")
w("DROP TABLE big;\nVACUUM;\nPRAGMA integrity_check;\n")
out.close()
