"""The discover feed: scoring, exclusions, the cache and its invalidation.

The scoring and exclusion tests call the one feed query in-process. Their
users live on campuses and interests no other test uses, and seek only
nonbinary users, so the other suites' users neither enter nor reorder them.
The cache tests go through the running platform over HTTP.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from tests import factories
from tests.factories import catalogue_ids, make_user
from unimatch.storage.cache import feed_key
from unimatch.storage.feed import FEED_SIZE, compute_feed
from unimatch.storage.users import PROFILE_COMPLETE

NOW = dt.datetime.now(dt.UTC)
LONG_AGO = NOW - dt.timedelta(days=3)
NB = ("nonbinary",)


async def _catalogue(db, campus_index: int, interest_slice: slice):
    campuses, interests = await catalogue_ids(db)
    return campuses[campus_index], interests[interest_slice]


async def _nb_user(db, config, **kwargs) -> factories.TestUser:
    kwargs.setdefault("gender", "nonbinary")
    kwargs.setdefault("interested_in", NB)
    return await make_user(db, config, **kwargs)


def _scores(feed: list[dict], users: list[factories.TestUser]) -> dict[uuid.UUID, int]:
    wanted = {str(u.id) for u in users}
    return {uuid.UUID(c["user_id"]): c["score"] for c in feed if c["user_id"] in wanted}


async def test_each_scoring_term_alone_and_their_sum(db, config):
    campuses, interests = await catalogue_ids(db)
    home, away = campuses[30], campuses[31]
    mine = interests[30:34]
    unrelated = interests[40:43]
    viewer = await _nb_user(db, config, campus_id=home, year_of_study=3, interests=mine)

    async def candidate(**kw) -> factories.TestUser:
        base = dict(campus_id=away, year_of_study=5, interests=unrelated, last_active=LONG_AGO)
        return await _nb_user(db, config, **{**base, **kw})

    baseline = await candidate()  # only "complete profile"
    no_photo = await candidate()
    await db.execute("DELETE FROM photos WHERE user_id = $1", no_photo.id)
    campus = await candidate(campus_id=home)
    year = await candidate(year_of_study=3)
    shared_one = await candidate(interests=[mine[0], *unrelated])
    shared_three = await candidate(interests=[*mine[:3], unrelated[0]])
    active = await candidate(last_active=NOW - dt.timedelta(hours=23))
    everything = await candidate(
        campus_id=home, year_of_study=3, interests=mine, last_active=NOW
    )
    users = [baseline, no_photo, campus, year, shared_one, shared_three, active, everything]

    scores = _scores(await compute_feed(db, viewer.id), users)

    assert scores == {
        baseline.id: 10,
        no_photo.id: 0,
        campus.id: 110,
        year.id: 60,
        shared_one.id: 35,
        shared_three.id: 85,
        active.id: 30,
        everything.id: 100 + 50 + 4 * 25 + 20 + 10,
    }


async def test_activity_term_counts_the_last_24_hours_only(db, config):
    campus, mine = await _catalogue(db, 32, slice(20, 23))
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine)
    inside = await _nb_user(db, config, campus_id=campus, interests=mine,
                            last_active=NOW - dt.timedelta(hours=23, minutes=50))
    outside = await _nb_user(db, config, campus_id=campus, interests=mine,
                             last_active=NOW - dt.timedelta(hours=24, minutes=10))

    scores = _scores(await compute_feed(db, viewer.id), [inside, outside])

    assert scores[inside.id] - scores[outside.id] == 20


async def test_ordered_by_score_then_recent_activity(db, config):
    campus, mine = await _catalogue(db, 33, slice(10, 13))
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine, year_of_study=1)
    low = await _nb_user(db, config, campus_id=campus, year_of_study=4, interests=mine)
    tie_old = await _nb_user(db, config, campus_id=campus, year_of_study=1, interests=mine,
                             last_active=NOW - dt.timedelta(hours=2))
    tie_new = await _nb_user(db, config, campus_id=campus, year_of_study=1, interests=mine,
                             last_active=NOW - dt.timedelta(minutes=5))
    wanted = {str(u.id) for u in (low, tie_old, tie_new)}

    feed = await compute_feed(db, viewer.id)
    order = [c["user_id"] for c in feed if c["user_id"] in wanted]

    assert order == [str(tie_new.id), str(tie_old.id), str(low.id)]
    assert [c["score"] for c in feed] == sorted((c["score"] for c in feed), reverse=True)


async def test_every_exclusion_rule(db, config):
    campus, mine = await _catalogue(db, 34, slice(5, 8))
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine)

    async def on_campus(**kw) -> factories.TestUser:
        return await _nb_user(db, config, campus_id=campus, interests=mine, **kw)

    shown = await on_campus()
    swiped = await on_campus()
    passed = await on_campus()
    blocked_by_me = await on_campus()
    blocking_me = await on_campus()
    suspended = await on_campus()
    ban_lifted = await on_campus()
    suspension_over = await on_campus()
    unverified = await on_campus(verified=False)
    invisible = await on_campus(visible=False)
    wrong_gender = await on_campus(gender="woman")
    not_seeking_me = await on_campus(interested_in=("man",))
    await db.execute(
        """INSERT INTO swipes (swiper_id, swiped_id, action)
           VALUES ($1, $2, 'like'), ($1, $3, 'pass')""",
        viewer.id, swiped.id, passed.id,
    )
    await db.execute(
        "INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2), ($3, $1)",
        viewer.id, blocked_by_me.id, blocking_me.id,
    )
    await db.execute(
        """INSERT INTO suspensions (user_id, reason, until, lifted_at) VALUES
           ($1, 'spam', NULL, NULL), ($2, 'spam', NULL, now()),
           ($3, 'spam', now() - interval '1 hour', NULL)""",
        suspended.id, ban_lifted.id, suspension_over.id,
    )

    ids = {c["user_id"] for c in await compute_feed(db, viewer.id)}

    assert str(viewer.id) not in ids
    for present in (shown, ban_lifted, suspension_over):
        assert str(present.id) in ids
    for absent in (swiped, passed, blocked_by_me, blocking_me, suspended, unverified,
                   invisible, wrong_gender, not_seeking_me):
        assert str(absent.id) not in ids
    # The viewer swiped by someone else still sees them (only own swipes hide).
    await db.execute(
        "INSERT INTO swipes (swiper_id, swiped_id, action) VALUES ($1, $2, 'like')",
        shown.id, viewer.id,
    )
    assert str(shown.id) in {c["user_id"] for c in await compute_feed(db, viewer.id)}


async def test_gender_must_match_both_ways(db, config):
    campus, mine = await _catalogue(db, 35, slice(0, 3))
    woman_for_men = await make_user(db, config, gender="woman", interested_in=("man",),
                                    campus_id=campus, interests=mine)
    man_for_women = await make_user(db, config, gender="man", interested_in=("woman",),
                                    campus_id=campus, interests=mine)
    man_for_men = await make_user(db, config, gender="man", interested_in=("man",),
                                  campus_id=campus, interests=mine)

    feed = {c["user_id"] for c in await compute_feed(db, woman_for_men.id, FEED_SIZE)}

    assert str(man_for_women.id) in feed
    assert str(man_for_men.id) not in feed


async def test_cards_carry_the_public_profile(db, config):
    campus, mine = await _catalogue(db, 36, slice(14, 17))
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine)
    other = await _nb_user(db, config, campus_id=campus, interests=mine, name="Wanjiru")

    card = next(c for c in await compute_feed(db, viewer.id) if c["user_id"] == str(other.id))

    assert card["display_name"] == "Wanjiru"
    row = await db.fetchrow("SELECT name, city FROM campuses WHERE id = $1", campus)
    assert card["campus"] == {"id": str(campus), "name": row["name"], "city": row["city"]}
    names = {r["id"]: r["name"] for r in await db.fetch("SELECT id, name FROM interests")}
    assert card["interests"] == sorted(
        ({"id": str(i), "name": names[i]} for i in mine), key=lambda i: i["name"]
    )
    assert len(card["photos"]) == 1 and card["photos"][0]["url"].startswith("/media/")
    assert "email" not in card and "birthdate" not in card


async def test_an_interest_added_later_shows_on_the_next_card(db, config):
    campus, mine = await _catalogue(db, 35, slice(11, 14))
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine)
    other = await _nb_user(db, config, campus_id=campus, interests=mine)
    await compute_feed(db, viewer.id)  # the catalogue is now in memory

    added = await db.fetchval(
        "INSERT INTO interests (slug, name, category) VALUES ('zz-chess-club', 'Zz chess club',"
        " 'clubs') RETURNING id"
    )
    try:
        await db.execute(
            "INSERT INTO user_interests (user_id, interest_id) VALUES ($1, $2)", other.id, added
        )
        card = next(c for c in await compute_feed(db, viewer.id) if c["user_id"] == str(other.id))
        assert card["interests"][-1] == {"id": str(added), "name": "Zz chess club"}
        assert len(card["interests"]) == len(mine) + 1
    finally:
        await db.execute("DELETE FROM user_interests WHERE interest_id = $1", added)
        await db.execute("DELETE FROM interests WHERE id = $1", added)


async def test_feed_completeness_agrees_with_the_profile_definition(db, config):
    campus, mine = await _catalogue(db, 37, slice(17, 20))
    users = [
        await _nb_user(db, config, campus_id=campus, interests=mine),
        await _nb_user(db, config, campus_id=campus, interests=mine[:2]),
        await _nb_user(db, config, complete=False),
        await _nb_user(db, config, campus_id=campus, interests=mine),
    ]
    await db.execute("DELETE FROM photos WHERE user_id = $1", users[3].id)
    rows = await db.fetch(
        f"""SELECT u.id, u.feed_complete, {PROFILE_COMPLETE.format(u="u")} AS complete
            FROM users u WHERE u.id = ANY($1::uuid[])""",
        [u.id for u in users],
    )
    assert {r["id"]: r["feed_complete"] for r in rows} == {r["id"]: r["complete"] for r in rows}
    assert sorted(r["complete"] for r in rows) == [False, False, False, True]


# -- through HTTP: permissions, the cache and its invalidation ---------------


async def _discover(http, user: factories.TestUser, limit: int = FEED_SIZE) -> dict:
    async with http.get(f"/api/v1/discover?limit={limit}", headers=user.auth) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_discover_needs_a_complete_profile(http, db, config):
    incomplete = await make_user(db, config, complete=False)
    async with http.get("/api/v1/discover", headers=incomplete.auth) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "profile_incomplete"
    unverified = await make_user(db, config, verified=False)
    async with http.get("/api/v1/discover", headers=unverified.auth) as resp:
        assert resp.status == 403
    async with http.get("/api/v1/discover") as resp:
        assert resp.status == 401


async def test_a_cached_feed_is_not_served_once_the_profile_is_incomplete(http, db, config):
    campus, mine = await _catalogue(db, 33, slice(20, 23))
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine)
    await _nb_user(db, config, campus_id=campus, interests=mine)
    await _discover(http, viewer)
    assert (await _discover(http, viewer))["cached"] is True

    await db.execute("DELETE FROM photos WHERE user_id = $1", viewer.id)
    async with http.get("/api/v1/discover", headers=viewer.auth) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "profile_incomplete"


@pytest.mark.parametrize("limit", ["0", "51", "ten"])
async def test_discover_limit_is_validated(http, db, config, limit):
    user = await make_user(db, config)
    async with http.get(f"/api/v1/discover?limit={limit}", headers=user.auth) as resp:
        assert resp.status == 400
        assert "limit" in (await resp.json())["detail"]


async def test_limit_and_cache_hit(http, db, config, cache):
    campus, mine = await _catalogue(db, 38, slice(23, 26))
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine)
    for _ in range(3):
        await _nb_user(db, config, campus_id=campus, interests=mine)
    await cache.delete(feed_key(viewer.id))

    first = await _discover(http, viewer, limit=2)
    second = await _discover(http, viewer, limit=2)

    assert first["cached"] is False and second["cached"] is True
    assert len(first["results"]) == 2
    assert second["results"] == first["results"]
    assert await cache.get_json(feed_key(viewer.id)) is not None


async def test_a_cache_entry_of_another_shape_is_a_miss(http, db, config, cache):
    campus, mine = await _catalogue(db, 34, slice(8, 11))
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine)
    other = await _nb_user(db, config, campus_id=campus, interests=mine)
    await cache.set_json(feed_key(viewer.id), [{"user_id": str(other.id)}], 600)

    page = await _discover(http, viewer)

    assert page["cached"] is False
    assert str(other.id) in {c["user_id"] for c in page["results"]}
    assert (await _discover(http, viewer))["cached"] is True


async def _pair_on_campus(db, config, campus_index: int, interests: slice):
    campus, mine = await _catalogue(db, campus_index, interests)
    viewer = await _nb_user(db, config, campus_id=campus, interests=mine)
    other = await _nb_user(db, config, campus_id=campus, interests=mine)
    return viewer, other


async def _post(http, user: factories.TestUser, path: str, body: dict) -> tuple[int, dict]:
    async with http.post(path, json=body, headers=user.auth) as resp:
        return resp.status, await resp.json()


async def test_own_swipe_clears_the_feed(http, db, config):
    viewer, other = await _pair_on_campus(db, config, 39, slice(26, 29))
    extra = await _nb_user(db, config, campus_id=other.campus_id, interests=other.interests)
    await _discover(http, viewer)
    assert (await _discover(http, viewer))["cached"] is True

    status, _ = await _post(http, viewer, "/api/v1/swipes",
                            {"target_id": str(other.id), "action": "pass"})
    assert status == 201
    page = await _discover(http, viewer)

    assert page["cached"] is False
    ids = {c["user_id"] for c in page["results"]}
    assert str(other.id) not in ids and str(extra.id) in ids


async def test_a_match_clears_both_feeds(http, db, config, cache):
    viewer, other = await _pair_on_campus(db, config, 40, slice(29, 32))
    await _discover(http, viewer)
    await _discover(http, other)
    await _post(http, viewer, "/api/v1/swipes", {"target_id": str(other.id), "action": "like"})
    await _discover(http, other)  # cached again after the first like cleared nothing of other's
    assert (await _discover(http, other))["cached"] is True

    status, body = await _post(http, other, "/api/v1/swipes",
                               {"target_id": str(viewer.id), "action": "like"})
    assert status == 201 and body["matched"] is True

    assert await cache.get_json(feed_key(viewer.id)) is None
    assert await cache.get_json(feed_key(other.id)) is None


async def test_block_hides_both_ways_even_from_cached_pages(http, db, config):
    viewer, other = await _pair_on_campus(db, config, 41, slice(32, 35))
    assert str(other.id) in {c["user_id"] for c in (await _discover(http, viewer))["results"]}
    assert str(viewer.id) in {c["user_id"] for c in (await _discover(http, other))["results"]}

    status, _ = await _post(http, other, "/api/v1/blocks", {"user_id": str(viewer.id)})
    assert status == 201

    for user, hidden in ((viewer, other), (other, viewer)):
        ids = {c["user_id"] for c in (await _discover(http, user))["results"]}
        assert str(hidden.id) not in ids


async def test_a_cached_page_never_shows_a_suspended_user(http, db, config):
    viewer, other = await _pair_on_campus(db, config, 29, slice(35, 38))
    await _discover(http, viewer)
    cached = await _discover(http, viewer)
    assert cached["cached"] is True and str(other.id) in {c["user_id"] for c in cached["results"]}

    await db.execute("INSERT INTO suspensions (user_id, reason) VALUES ($1, 'spam')", other.id)
    page = await _discover(http, viewer)

    assert page["cached"] is True
    assert str(other.id) not in {c["user_id"] for c in page["results"]}


async def test_a_swipe_made_elsewhere_is_filtered_from_a_cached_page(http, db, config, cache):
    viewer, other = await _pair_on_campus(db, config, 28, slice(38, 41))
    await _discover(http, viewer)
    # A swipe committed while this page sat in the cache (say, a retried
    # request whose cache delete was lost) still hides the target.
    await db.execute(
        "INSERT INTO swipes (swiper_id, swiped_id, action) VALUES ($1, $2, 'pass')",
        viewer.id, other.id,
    )
    page = await _discover(http, viewer)
    assert page["cached"] is True
    assert str(other.id) not in {c["user_id"] for c in page["results"]}


async def test_refresh_feeds_job_warms_recently_active_users(db, config, cache):
    from unimatch.scheduler.feed_refresh import refresh_feeds_of

    viewer, other = await _pair_on_campus(db, config, 27, slice(41, 44))
    idle = await _nb_user(db, config, last_active=NOW - dt.timedelta(hours=3))
    await cache.delete(feed_key(viewer.id), feed_key(idle.id))

    await refresh_feeds_of(db, cache)

    warm = await cache.get_json(feed_key(viewer.id))
    assert warm is not None and str(other.id) in {user_id for user_id, _score in warm}
    assert await cache.get_json(feed_key(idle.id)) is None
