"""
Web pages of the signed-in user: sign in and out (a Django session, CSRF-protected forms) and
the user's API tokens (create, with the key shown once; disable, enable, delete).
"""

from __future__ import annotations

from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from debusine.server.db.models import Token, User

#: Longest token comment (the column's size).
COMMENT_MAX_LENGTH = Token._meta.get_field("comment").max_length or 100


class SignInView(LoginView):
    """`/-/signin/`: username and password; back to `?next=` (same host only) or home."""

    template_name = "web/sign_in.html"
    redirect_authenticated_user = True


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    """`POST /-/signout/`: end the session (a POST with the CSRF token, never a link)."""
    logout(request)
    return HttpResponseRedirect(reverse("web-home"))


def session_user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """
    `GET /-/user/tokens/`: the user's tokens. `POST` (field `comment`): create an enabled
    token and show its key on this one page only: only its hash is stored.
    """
    user = session_user(request)
    new_key = None
    error = None
    if request.method == "POST":
        comment = request.POST.get("comment", "").strip()
        if len(comment) > COMMENT_MAX_LENGTH:
            error = f"The comment is longer than {COMMENT_MAX_LENGTH} characters."
        elif "\x00" in comment:
            error = "The comment cannot contain NUL characters."
        else:
            _, new_key = Token.objects.create_with_key(user=user, comment=comment, enabled=True)
    user_tokens = Token.objects.filter(user=user).order_by("-created_at", "-pk")
    return render(
        request,
        "web/tokens.html",
        {
            "tokens": user_tokens,
            "new_key": new_key,
            "error": error,
            "comment_max_length": COMMENT_MAX_LENGTH,
        },
        status=400 if error else 200,
    )


def own_token(request: HttpRequest, token_id: int) -> Token:
    """One of the session user's tokens (another user's is a 404, as a missing one)."""
    token = Token.objects.filter(pk=token_id, user=session_user(request)).first()
    if token is None:
        raise Http404("No such token")
    return token


@login_required
@require_POST
def token_action(request: HttpRequest, token_id: int, action: str) -> HttpResponse:
    """`POST /-/user/tokens/<id>/{disable,enable,delete}/`; back to the token list."""
    token = own_token(request, token_id)
    if action == "disable":
        token.disable()
    elif action == "enable":
        token.enable()
    elif action == "delete":
        token.delete()
    else:
        raise Http404("No such action")
    return HttpResponseRedirect(reverse("web-tokens"))
