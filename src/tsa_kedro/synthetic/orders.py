"""The simulated world: customers, cards, merchants, terminals, and who orders when.

Legitimate activity comes first; planted fraud orders are added on top of it, on the same
customers and cards, so that they also appear in the histories of later orders. Every
array is drawn for all orders at once from one ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tsa_kedro.synthetic.config import FRAUD_PATTERNS, SyntheticConfig

LEGIT = "legit"
PATTERN_NAMES = (LEGIT, *FRAUD_PATTERNS)

COUNTRIES = ("US", "CA", "GB", "DE", "FR", "MX", "AU", "BR", "IN", "NG", "RU", "CN")
HOME_COUNTRY_WEIGHTS = (
    0.6,
    0.1,
    0.08,
    0.06,
    0.05,
    0.04,
    0.03,
    0.02,
    0.02,
    0.0,
    0.0,
    0.0,
)
CURRENCIES = (
    "USD",
    "CAD",
    "GBP",
    "EUR",
    "EUR",
    "MXN",
    "AUD",
    "BRL",
    "INR",
    "NGN",
    "RUB",
    "CNY",
)
CARD_BRANDS = ("visa", "mastercard", "amex", "discover")
CARD_BRAND_WEIGHTS = (0.5, 0.32, 0.12, 0.06)
CARD_TYPES = ("credit", "debit", "prepaid")
CARD_TYPE_WEIGHTS = (0.55, 0.4, 0.05)
PAYMENT_METHODS = ("card_on_file", "card_entry", "apple_pay", "google_pay", "wallet")
MERCHANT_CATEGORIES = (
    "grocery",
    "electronics",
    "fashion",
    "travel",
    "digital_goods",
    "restaurants",
    "gaming",
    "home",
    "pharmacy",
    "gift_cards",
)
CATEGORY_AMOUNT_FACTOR = np.array([0.6, 3.0, 1.2, 4.0, 0.3, 0.7, 0.5, 1.5, 0.6, 1.8])
DEVICES = ("desktop", "mobile_ios", "mobile_android", "tablet", "pos")
ONLINE_DEVICES = 4
POS_DEVICE = 4
CHANNELS = ("web", "app", "in_store")
EMAIL_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "proton.me",
    "corp.example",
    "mail.example",
)
DAY = 86400


@dataclass
class World:
    """Entities and their fixed attributes (index = entity id)."""

    customer_scale: np.ndarray  # typical amount
    customer_rate: np.ndarray  # orders per day
    customer_hour: np.ndarray  # preferred hour of day
    customer_country: np.ndarray
    customer_device: np.ndarray
    customer_payment: np.ndarray
    customer_email: np.ndarray
    customer_created: np.ndarray  # epoch seconds
    customer_cards: (
        np.ndarray
    )  # flat card ids, customer c's at [card_offsets[c], ...[c+1])
    card_offsets: np.ndarray
    card_owner: np.ndarray
    card_brand: np.ndarray
    card_type: np.ndarray
    card_country: np.ndarray
    card_created: np.ndarray
    favourites: np.ndarray  # (n_customers, favourite_terminals)
    terminal_merchant: np.ndarray
    terminal_in_store: np.ndarray
    terminal_weight: np.ndarray
    merchant_category: np.ndarray
    merchant_country: np.ndarray

    @property
    def n_customers(self) -> int:
        return len(self.customer_scale)

    @property
    def n_cards(self) -> int:
        return len(self.card_owner)

    @property
    def n_terminals(self) -> int:
        return len(self.terminal_merchant)


def build_world(config: SyntheticConfig, rng: np.random.Generator) -> World:
    """Draw every customer, card, merchant and terminal."""
    n_cust = config.n_customers
    start = config.start_epoch
    rate = rng.lognormal(0.0, 0.6, n_cust)
    rate *= config.orders_per_customer_per_day / rate.mean()
    night_owl = rng.random(n_cust) < 0.08
    hour = np.where(
        night_owl, rng.normal(2.0, 1.5, n_cust), rng.normal(15.0, 3.0, n_cust)
    )
    country = rng.choice(len(COUNTRIES), n_cust, p=_normalised(HOME_COUNTRY_WEIGHTS))

    own_cards = 1 + rng.poisson(config.extra_cards_per_customer, n_cust)
    card_owner = np.repeat(np.arange(n_cust), own_cards)
    n_cards = len(card_owner)
    shared = np.flatnonzero(rng.random(n_cards) < config.shared_card_rate)
    co_user = (
        card_owner[shared] + 1 + rng.integers(0, n_cust - 1, len(shared))
    ) % n_cust
    holder = np.r_[card_owner, co_user]
    card = np.r_[np.arange(n_cards), shared]
    borrowed = np.r_[np.zeros(n_cards, bool), np.ones(len(shared), bool)]
    by_holder = np.lexsort((card, borrowed, holder))  # own cards first, then borrowed
    customer_cards = card[by_holder]
    card_offsets = np.r_[0, np.cumsum(np.bincount(holder, minlength=n_cust))]

    n_terminals = config.n_merchants * config.terminals_per_merchant
    terminal_weight = rng.pareto(1.2, n_terminals) + 0.05
    terminal_weight /= terminal_weight.sum()
    merchant_country = np.where(
        rng.random(config.n_merchants) < 0.85,
        0,
        rng.integers(0, len(COUNTRIES), config.n_merchants),
    )
    favourites = rng.choice(
        n_terminals, (n_cust, config.favourite_terminals), p=terminal_weight
    )
    return World(
        customer_scale=rng.lognormal(3.4, 0.6, n_cust),
        customer_rate=rate,
        customer_hour=np.mod(hour, 24.0),
        customer_country=country,
        customer_device=rng.integers(0, ONLINE_DEVICES, n_cust),
        customer_payment=rng.integers(0, len(PAYMENT_METHODS), n_cust),
        customer_email=rng.choice(
            len(EMAIL_DOMAINS), n_cust, p=_normalised((30, 15, 15, 12, 4, 12, 12))
        ),
        customer_created=start - rng.integers(30, 3000, n_cust) * DAY,
        customer_cards=customer_cards,
        card_offsets=card_offsets,
        card_owner=card_owner,
        card_brand=rng.choice(
            len(CARD_BRANDS), n_cards, p=_normalised(CARD_BRAND_WEIGHTS)
        ),
        card_type=rng.choice(
            len(CARD_TYPES), n_cards, p=_normalised(CARD_TYPE_WEIGHTS)
        ),
        card_country=np.where(
            rng.random(n_cards) < 0.95, country[card_owner], rng.integers(0, 9, n_cards)
        ),
        card_created=start - rng.integers(10, 2000, n_cards) * DAY,
        favourites=favourites,
        terminal_merchant=np.repeat(
            np.arange(config.n_merchants), config.terminals_per_merchant
        ),
        terminal_in_store=rng.random(n_terminals) < 0.3,
        terminal_weight=terminal_weight,
        merchant_category=rng.integers(0, len(MERCHANT_CATEGORIES), config.n_merchants),
        merchant_country=merchant_country,
    )


@dataclass
class OrderDraft:
    """Behavioural columns of orders before export (one array per column)."""

    customer: np.ndarray
    card: np.ndarray
    terminal: np.ndarray
    ts: np.ndarray
    amount: np.ndarray
    device: np.ndarray
    ship_country: np.ndarray
    payment: np.ndarray
    failed_logins: np.ndarray
    login_age: np.ndarray  # seconds since last login
    pattern: np.ndarray  # index into PATTERN_NAMES

    def __len__(self) -> int:
        return len(self.ts)

    @staticmethod
    def concat(drafts: list[OrderDraft]) -> OrderDraft:
        names = OrderDraft.__dataclass_fields__
        return OrderDraft(
            **{k: np.concatenate([getattr(d, k) for d in drafts]) for k in names}
        )

    def take(self, index: np.ndarray) -> OrderDraft:
        return OrderDraft(
            **{k: getattr(self, k)[index] for k in OrderDraft.__dataclass_fields__}
        )


def simulate_orders(
    config: SyntheticConfig, world: World, rng: np.random.Generator
) -> OrderDraft:
    """Legitimate orders plus every planted pattern, sorted by time."""
    legit = _legitimate(config, world, rng)
    target = config.fraud_rate / (1.0 - config.fraud_rate) * len(legit)
    shares = config.fraud_shares()
    drafts = [legit]
    for pattern in FRAUD_PATTERNS:
        expected = target * shares[pattern] / max(config.fraud_rate, 1e-12)
        if expected > 0:
            drafts.append(_PLANTERS[pattern](config, world, rng, expected))
    orders = OrderDraft.concat(drafts)
    end = config.start_epoch + config.n_days * DAY - 1
    orders.ts = np.clip(orders.ts, config.start_epoch, end)
    orders.amount = np.round(orders.amount, 2)  # cents, as exported
    return orders.take(np.argsort(orders.ts, kind="stable"))


def _legitimate(
    config: SyntheticConfig, world: World, rng: np.random.Generator
) -> OrderDraft:
    per_customer = rng.poisson(world.customer_rate * config.n_days)
    customer = np.repeat(np.arange(world.n_customers), per_customer)
    n = len(customer)
    day = rng.integers(0, config.n_days, n)
    hour = np.mod(world.customer_hour[customer] + rng.normal(0.0, 3.0, n), 24.0)
    ts = config.start_epoch + day * DAY + (hour * 3600).astype(np.int64)
    terminal = np.where(
        rng.random(n) < 0.8,
        world.favourites[customer, rng.integers(0, config.favourite_terminals, n)],
        rng.choice(world.n_terminals, n, p=world.terminal_weight),
    )
    amount = _typical_amount(world, customer, terminal) * rng.lognormal(0.0, 0.45, n)
    small = rng.random(n) < 0.05
    amount = np.where(small, rng.uniform(0.5, config.small_amount_max, n), amount)
    return OrderDraft(
        customer=customer,
        card=_pick_card(world, customer, rng, primary=0.75),
        terminal=terminal,
        ts=ts,
        amount=amount,
        device=np.where(
            rng.random(n) < 0.9,
            world.customer_device[customer],
            rng.integers(0, ONLINE_DEVICES, n),
        ),
        ship_country=np.where(
            rng.random(n) < 0.97,
            world.customer_country[customer],
            rng.integers(0, 9, n),
        ),
        payment=np.where(
            rng.random(n) < 0.85,
            world.customer_payment[customer],
            rng.integers(0, len(PAYMENT_METHODS), n),
        ),
        failed_logins=rng.poisson(0.05, n),
        login_age=rng.lognormal(7.0, 1.5, n),
        pattern=np.zeros(n, np.int64),
    )


def _compromised_terminal(
    config: SyntheticConfig, world: World, rng: np.random.Generator, expected: float
) -> OrderDraft:
    """A terminal is compromised for weeks: stolen cards are cashed out at it."""
    window = min(config.compromised_terminal_weeks * 7, config.n_days)
    per_event = config.compromised_terminal_orders_per_day * window
    events = max(1, round(expected / per_event))
    # Small merchants' terminals are the easy targets: uniform, not by popularity.
    terminals = rng.integers(0, world.n_terminals, events)
    first_day = rng.integers(0, config.n_days - window + 1, events)
    counts = rng.poisson(per_event, events)
    event = np.repeat(np.arange(events), counts)
    n = len(event)
    ts = config.start_epoch + first_day[event] * DAY + rng.integers(0, window * DAY, n)
    card = rng.integers(0, world.n_cards, n)
    customer = world.card_owner[card]
    terminal = terminals[event]
    foreign = rng.random(n) < 0.5
    return OrderDraft(
        customer=customer,
        card=card,
        terminal=terminal,
        ts=ts,
        amount=_typical_amount(world, customer, terminal) * rng.lognormal(0.6, 0.5, n),
        device=rng.integers(0, ONLINE_DEVICES, n),
        ship_country=np.where(
            foreign,
            rng.integers(0, len(COUNTRIES), n),
            world.customer_country[customer],
        ),
        payment=rng.integers(0, len(PAYMENT_METHODS), n),
        failed_logins=rng.poisson(0.3, n),
        login_age=rng.lognormal(6.0, 1.5, n),
        pattern=np.full(n, PATTERN_NAMES.index("compromised_terminal")),
    )


def _compromised_customer(
    config: SyntheticConfig, world: World, rng: np.random.Generator, expected: float
) -> OrderDraft:
    """An account is taken over for days: larger orders, a new device, often abroad."""
    window = min(config.compromised_customer_days, config.n_days)
    per_event = config.compromised_customer_orders_per_day * window
    events = max(1, round(expected / per_event))
    victims = rng.choice(
        world.n_customers, min(events, world.n_customers), replace=False
    )
    first_day = rng.integers(0, config.n_days - window + 1, len(victims))
    counts = 1 + rng.poisson(per_event - 1, len(victims))
    event = np.repeat(np.arange(len(victims)), counts)
    n = len(event)
    customer = victims[event]
    terminal = rng.choice(world.n_terminals, n, p=world.terminal_weight)
    new_device = (
        world.customer_device[customer] + rng.integers(1, ONLINE_DEVICES, n)
    ) % ONLINE_DEVICES
    abroad = rng.random(n) < 0.35
    return OrderDraft(
        customer=customer,
        card=_pick_card(world, customer, rng, primary=0.5),
        terminal=terminal,
        ts=config.start_epoch
        + first_day[event] * DAY
        + rng.integers(0, window * DAY, n),
        amount=world.customer_scale[customer]
        * CATEGORY_AMOUNT_FACTOR[
            world.merchant_category[world.terminal_merchant[terminal]]
        ]
        * config.amount_multiplier
        * rng.lognormal(0.0, 0.3, n),
        device=new_device,
        ship_country=np.where(
            abroad, rng.integers(0, len(COUNTRIES), n), world.customer_country[customer]
        ),
        payment=rng.integers(0, len(PAYMENT_METHODS), n),
        failed_logins=rng.poisson(0.3, n),
        login_age=rng.lognormal(6.0, 1.5, n),
        pattern=np.full(n, PATTERN_NAMES.index("compromised_customer")),
    )


def _card_testing(
    config: SyntheticConfig, world: World, rng: np.random.Generator, expected: float
) -> OrderDraft:
    """A stolen card is tested with a burst of small orders, often then cashed out."""
    low, high = config.card_testing_burst
    per_event = (low + high) / 2 + config.card_testing_cashout_rate
    events = max(1, round(expected / per_event))
    cards = rng.integers(0, world.n_cards, events)
    begin = config.start_epoch + rng.integers(
        0, max(config.n_days - 1, 1) * DAY, events
    )
    tests = rng.integers(low, high + 1, events)
    cashout = rng.random(events) < config.card_testing_cashout_rate
    counts = tests + cashout
    event = np.repeat(np.arange(events), counts)
    n = len(event)
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    gaps = rng.exponential(90.0, n).astype(np.int64) + 5
    gaps[rank == 0] = 0
    ts = begin[event] + _cumsum_by_event(gaps, event)
    is_cashout = rank >= tests[event]
    ts = np.where(is_cashout, ts + rng.integers(3600, 6 * 3600, n), ts)
    card = cards[event]
    customer = world.card_owner[card]
    terminal = rng.choice(world.n_terminals, n, p=world.terminal_weight)
    amount = np.where(
        is_cashout,
        rng.lognormal(np.log(600.0), 0.5, n),
        rng.uniform(0.5, config.small_amount_max, n),
    )
    return OrderDraft(
        customer=customer,
        card=card,
        terminal=terminal,
        ts=ts,
        amount=amount,
        device=rng.integers(0, ONLINE_DEVICES, n),
        ship_country=world.customer_country[customer],
        payment=rng.integers(0, len(PAYMENT_METHODS), n),
        failed_logins=rng.poisson(0.05, n),
        login_age=rng.lognormal(5.0, 1.5, n),
        pattern=np.full(n, PATTERN_NAMES.index("card_testing")),
    )


def _velocity(
    config: SyntheticConfig, world: World, rng: np.random.Generator, expected: float
) -> OrderDraft:
    """Ordinary-looking orders of one customer, many within an hour."""
    low, high = config.velocity_burst
    events = max(1, round(expected / ((low + high) / 2)))
    victims = rng.integers(0, world.n_customers, events)
    begin = config.start_epoch + rng.integers(
        0, max(config.n_days - 1, 1) * DAY, events
    )
    counts = rng.integers(low, high + 1, events)
    event = np.repeat(np.arange(events), counts)
    n = len(event)
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    gaps = rng.exponential(300.0, n).astype(np.int64) + 10
    gaps[rank == 0] = 0
    customer = victims[event]
    terminal = world.favourites[
        customer, rng.integers(0, config.favourite_terminals, n)
    ]
    return OrderDraft(
        customer=customer,
        card=_pick_card(world, customer, rng, primary=0.75),
        terminal=terminal,
        ts=begin[event] + _cumsum_by_event(gaps, event),
        amount=_typical_amount(world, customer, terminal) * rng.lognormal(0.2, 0.4, n),
        device=world.customer_device[customer],
        ship_country=world.customer_country[customer],
        payment=world.customer_payment[customer],
        failed_logins=rng.poisson(0.05, n),
        login_age=rng.lognormal(7.0, 1.5, n),
        pattern=np.full(n, PATTERN_NAMES.index("velocity")),
    )


_PLANTERS = {
    "compromised_terminal": _compromised_terminal,
    "compromised_customer": _compromised_customer,
    "card_testing": _card_testing,
    "velocity": _velocity,
}


def _typical_amount(
    world: World, customer: np.ndarray, terminal: np.ndarray
) -> np.ndarray:
    category = world.merchant_category[world.terminal_merchant[terminal]]
    return world.customer_scale[customer] * CATEGORY_AMOUNT_FACTOR[category]


def _pick_card(
    world: World, customer: np.ndarray, rng: np.random.Generator, primary: float
) -> np.ndarray:
    """The customer's first card with probability ``primary``, else any of theirs."""
    first = world.card_offsets[customer]
    count = world.card_offsets[customer + 1] - first
    other = (rng.random(len(customer)) * count).astype(np.int64)
    index = np.where(rng.random(len(customer)) < primary, 0, other)
    return world.customer_cards[first + index]


def _cumsum_by_event(gaps: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Running sum of ``gaps`` restarting at each new event (events are contiguous)."""
    total = np.cumsum(gaps)
    starts = np.r_[0, np.flatnonzero(np.diff(event)) + 1]
    offset = np.repeat(total[starts] - gaps[starts], np.diff(np.r_[starts, len(event)]))
    return total - offset


def _normalised(weights: tuple[float, ...]) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    return array / array.sum()
