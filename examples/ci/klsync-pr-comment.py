#!/usr/bin/env python3
"""Create or update the single klsync plan comment on a GitHub pull request.

Usage:
    klsync-pr-comment.py BODY_FILE [--pr NUMBER]

BODY_FILE holds the markdown to show (the output of `klsync plan --format markdown`).
The comment is found by the hidden marker `<!-- klsync-plan -->` that this script puts on
its first line, so every push edits the same comment instead of adding a new one.

Environment:
    GITHUB_TOKEN       token with `pull-requests: write` (required; never printed)
    GITHUB_REPOSITORY  owner/name (required; set by GitHub Actions)
    GITHUB_API_URL     API root (default https://api.github.com; set by GitHub Actions)
    PR_NUMBER          pull request number, when --pr is not given
    GITHUB_SERVER_URL, GITHUB_RUN_ID
                       used to link the workflow run when the plan has to be truncated
    GITHUB_OUTPUT      when set, `comment-id` and `comment-url` are written to it
    KLSYNC_COMMENT_RETRY_DELAY
                       first retry delay in seconds (default 2; tests use a small value)

Whose comment is "ours": if `GET /user` works (a personal or app user token), only comments
by that login count. The Actions GITHUB_TOKEN cannot call `GET /user` (403), so then only
comments by a Bot account count. Either way the marker must be there too, so a person who
pastes the marker into their own comment never gets that comment overwritten.

Exit status: 0 done, 1 GitHub refused or could not be reached, 2 usage error.
Standard library only, so it runs on any runner with Python 3.8+.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

MARKER = "<!-- klsync-plan -->"
# GitHub rejects comment bodies over 65,536 characters. It is not documented whether it counts
# code points or UTF-16 units, so measure in UTF-16 units (never fewer) and keep a margin.
MAX_BODY_UNITS = 65_000
PER_PAGE = 100
MAX_ATTEMPTS = 4
MAX_RETRY_WAIT_SECONDS = 30.0
USER_AGENT = "klsync-pr-comment"


class ApiError(Exception):
    """GitHub answered with an error we do not retry, or kept failing."""


def utf16_units(text):
    return len(text.encode("utf-16-le")) // 2


def build_body(plan, run_url):
    """The comment body: marker, then the plan, truncated with a note if it is too long."""
    head = MARKER + "\n"
    body = head + plan
    if utf16_units(body) <= MAX_BODY_UNITS:
        return body
    note = (
        "\n\n> **Plan truncated:** it is too long for a GitHub comment "
        "({} characters). The full plan is in the `klsync-plan-*` artifact".format(len(plan))
        + (" of [the workflow run]({}).".format(run_url) if run_url else " of the workflow run.")
        + "\n"
    )
    # Reserve room for the note and a closing code fence.
    budget = MAX_BODY_UNITS - utf16_units(head) - utf16_units(note) - utf16_units("\n```\n")
    kept = plan.encode("utf-16-le")[: budget * 2].decode("utf-16-le", errors="ignore")
    # Cut at a line boundary so no table row or diff line is half shown.
    newline = kept.rfind("\n")
    if newline > 0:
        kept = kept[: newline + 1]
    # An odd number of fences means the cut happened inside a code block: close it.
    fences = sum(1 for line in kept.splitlines() if line.lstrip().startswith("```"))
    if fences % 2 == 1:
        kept += "```\n"
    return head + kept + note


class GitHub:
    """A minimal GitHub REST client: JSON in and out, bounded retries, no token in messages."""

    def __init__(self, api_url, token, retry_delay):
        self.api_url = api_url.rstrip("/")
        self.origin = urllib.parse.urlsplit(self.api_url)[:2]
        self.token = token
        self.retry_delay = retry_delay

    def scrub(self, text):
        return text.replace(self.token, "***") if self.token else text

    def request(self, method, url, payload=None, allow_status=()):
        """Returns (status, headers, decoded JSON). Retries 5xx and rate limits briefly."""
        if not url.startswith("http"):
            url = self.api_url + url
        # The token goes only to the configured API host: a Link header cannot redirect it.
        if urllib.parse.urlsplit(url)[:2] != self.origin:
            raise ApiError("refusing to send the token to {} (not the API host)".format(url))
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        path = urllib.parse.urlsplit(url).path
        delay = self.retry_delay
        for attempt in range(1, MAX_ATTEMPTS + 1):
            req = urllib.request.Request(url, data=data, method=method)
            req.add_header("Authorization", "Bearer " + self.token)
            req.add_header("Accept", "application/vnd.github+json")
            req.add_header("X-GitHub-Api-Version", "2022-11-28")
            req.add_header("User-Agent", USER_AGENT)
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    raw = resp.read()
                    return resp.status, resp.headers, json.loads(raw) if raw else None
            except urllib.error.HTTPError as err:
                status, headers, text = err.code, err.headers, err.read().decode("utf-8", "replace")
                wait = retry_wait(status, headers, text, delay)
                # A rate-limited 403 is retried even where a plain 403 is an expected answer.
                if status in allow_status and (wait is None or attempt == MAX_ATTEMPTS):
                    return status, headers, None
                if wait is None or attempt == MAX_ATTEMPTS:
                    raise ApiError(
                        "{} {} failed: HTTP {} {}{}".format(
                            method, path, status, self.scrub(api_message(text)), hint(status)
                        )
                    )
                log("{} {}: HTTP {}, retrying in {:.1f}s".format(method, path, status, wait))
            except (urllib.error.URLError, OSError) as err:
                if attempt == MAX_ATTEMPTS:
                    raise ApiError(
                        "{} {} failed: {}".format(method, path, self.scrub(str(err)))
                    )
                wait = delay
                log("{} {}: {}, retrying in {:.1f}s".format(method, path, self.scrub(str(err)), wait))
            time.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")


def retry_wait(status, headers, text, delay):
    """Seconds to wait before retrying, or None when the error is final."""
    retry_after = headers.get("Retry-After") if headers else None
    rate_limited = status == 429 or (
        status == 403
        and (
            retry_after is not None
            or (headers and headers.get("X-RateLimit-Remaining") == "0")
            or "rate limit" in text.lower()
        )
    )
    if not (status >= 500 or rate_limited):
        return None
    if retry_after is not None:
        try:
            delay = max(delay, float(retry_after))
        except ValueError:
            pass
    # A wait longer than this would stall the job; failing tells the user to re-run instead.
    return min(delay, MAX_RETRY_WAIT_SECONDS)


def api_message(text):
    try:
        decoded = json.loads(text)
        message = decoded.get("message", "")
        errors = decoded.get("errors")
        if errors:
            message += " " + json.dumps(errors)
        return ": " + message if message else ""
    except (ValueError, AttributeError):
        return ": " + text[:300] if text else ""


def hint(status):
    if status == 401:
        return " (the token is missing, expired or wrong)"
    if status == 403:
        return (
            " (the token may not write pull request comments: give the workflow"
            " `permissions: pull-requests: write`; pull requests from forks get a read-only token)"
        )
    if status == 404:
        return " (check GITHUB_REPOSITORY and the pull request number, and that the token can see the repository)"
    return ""


def next_link(headers):
    """The rel="next" URL of a Link header, if any."""
    link = headers.get("Link") if headers else None
    if not link:
        return None
    for part in link.split(","):
        segments = part.split(";")
        url = segments[0].strip()
        if any(s.strip() in ('rel="next"', "rel=next") for s in segments[1:]):
            if url.startswith("<") and url.endswith(">"):
                return url[1:-1]
    return None


def own_login(gh):
    """The token's login, or None when the token cannot tell (the Actions GITHUB_TOKEN)."""
    status, _, user = gh.request("GET", "/user", allow_status=(401, 403, 404))
    if status == 200 and isinstance(user, dict):
        return user.get("login")
    return None


def find_comment(gh, repo, pr, login):
    """The oldest comment that is ours and carries the marker, following every page."""
    url = "/repos/{}/issues/{}/comments?per_page={}".format(repo, pr, PER_PAGE)
    found = []
    while url:
        _, headers, page = gh.request("GET", url)
        for comment in page or []:
            user = comment.get("user") or {}
            mine = user.get("login") == login if login else user.get("type") == "Bot"
            if mine and MARKER in (comment.get("body") or ""):
                found.append(comment)
        url = next_link(headers)
    if len(found) > 1:
        log("found {} klsync comments; updating the oldest (id {})".format(len(found), found[0]["id"]))
    return found[0] if found else None


def log(message):
    print("klsync-pr-comment: " + message, file=sys.stderr)


def write_outputs(comment):
    path = os.environ.get("GITHUB_OUTPUT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write("comment-id={}\ncomment-url={}\n".format(comment.get("id"), comment.get("html_url", "")))


def main(argv):
    parser = argparse.ArgumentParser(description="Create or update the klsync plan comment on a pull request.")
    parser.add_argument("body_file", help="markdown file with the plan")
    parser.add_argument("--pr", help="pull request number (default: $PR_NUMBER)")
    args = parser.parse_args(argv)

    token = os.environ.get("GITHUB_TOKEN", "")
    repo = os.environ.get("GITHUB_REPOSITORY", "")
    pr = args.pr or os.environ.get("PR_NUMBER", "")
    missing = [name for name, value in (("GITHUB_TOKEN", token), ("GITHUB_REPOSITORY", repo)) if not value]
    if missing:
        parser.error("set {} in the environment".format(" and ".join(missing)))
    if not pr.isdigit():
        parser.error("give the pull request number with --pr or PR_NUMBER (got {!r})".format(pr))
    if repo.count("/") != 1:
        parser.error("GITHUB_REPOSITORY must be owner/name (got {!r})".format(repo))
    try:
        with open(args.body_file, encoding="utf-8") as f:
            plan = f.read()
    except OSError as err:
        parser.error("cannot read {}: {}".format(args.body_file, err.strerror))
    try:
        retry_delay = float(os.environ.get("KLSYNC_COMMENT_RETRY_DELAY", "2"))
    except ValueError:
        parser.error("KLSYNC_COMMENT_RETRY_DELAY must be a number of seconds")

    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
    run_id = os.environ.get("GITHUB_RUN_ID")
    run_url = "{}/{}/actions/runs/{}".format(server, repo, run_id) if run_id else None
    body = build_body(plan, run_url)

    gh = GitHub(os.environ.get("GITHUB_API_URL") or "https://api.github.com", token, retry_delay)
    try:
        existing = find_comment(gh, repo, pr, own_login(gh))
        if existing:
            _, _, comment = gh.request(
                "PATCH", "/repos/{}/issues/comments/{}".format(repo, existing["id"]), {"body": body}
            )
            action = "updated"
        else:
            _, _, comment = gh.request("POST", "/repos/{}/issues/{}/comments".format(repo, pr), {"body": body})
            action = "created"
    except ApiError as err:
        log(str(err))
        return 1
    comment = comment or {}
    print("klsync-pr-comment: {} comment {} on #{} {}".format(action, comment.get("id"), pr, comment.get("html_url", "")).rstrip())
    write_outputs(comment)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
