"""Message bodies: plain GSM-7 and Unicode, of every class, in four length buckets.

Pools are drawn once at set-up from a seeded generator (sentences per class and
language, cut to a length drawn inside the bucket) and their encoding and segment
count are computed then; a message picks one. One-time codes are a placeholder of
``CODE_LEN`` characters, replaced per message by digits, so the count stays true.
"""

# The bodies are meant to hold Cyrillic, Arabic and CJK text, full-width punctuation included.
# ruff: noqa: RUF001

from __future__ import annotations

import random
from dataclasses import dataclass

from router.core import segments

CODE = "######"
CODE_LEN = len(CODE)
POOL_SIZE = 48

# Per class, per language: the opening sentence(s) and filler that lengthens a body.
_TEXT: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "otp": {
        "en": (
            (
                f"Your Acme verification code is {CODE}.",
                f"{CODE} is your login code.",
                f"Use {CODE} to sign in to Parcelo. Do not share it.",
                f"Your bank security code: {CODE}. We will never ask for it by phone.",
            ),
            (
                "It expires in 10 minutes.",
                "If you did not ask for it, ignore this message.",
                "Never share this code with anyone, not even our staff.",
                "Need help? Reply HELP or visit our support page.",
            ),
        ),
        "ru": (
            (f"Ваш код подтверждения: {CODE}.", f"Код для входа в приложение: {CODE}."),
            ("Никому не сообщайте этот код.", "Код действует 10 минут."),
        ),
        "ar": (
            (f"رمز التحقق الخاص بك هو {CODE}.", f"استخدم الرمز {CODE} لتسجيل الدخول."),
            ("لا تشارك هذا الرمز مع أي شخص.", "الرمز صالح لمدة عشر دقائق."),
        ),
        "zh": (
            (f"您的验证码是{CODE}，", f"登录验证码：{CODE}。"),
            ("10分钟内有效。", "请勿将验证码告诉他人。", "如非本人操作，请忽略本短信。"),
        ),
        "emoji": (
            (f"🔐 {CODE} is your Acme code.", f"✅ Code: {CODE}"),
            ("⏱️ Valid for 10 minutes.", "🙅 Don't share it.", "👋 Thanks for using Acme!"),
        ),
    },
    "transactional": {
        "en": (
            (
                "Your order #48213 has shipped.",
                "Reminder: your appointment is tomorrow at 9:30.",
                "Payment of USD 42.10 received, thank you.",
                "Your ride is arriving in 3 min.",
            ),
            (
                "Track it at https://t.example/x7Q2.",
                "Reply C to confirm or R to reschedule.",
                "Questions? Call us at +1 800 555 0100.",
                "Your receipt is in the app.",
                "Estimated delivery: Friday between 10:00 and 14:00.",
                "Thank you for choosing us; we hope to see you again soon.",
            ),
        ),
        "ru": (
            ("Ваш заказ №48213 отправлен.", "Напоминаем о записи завтра в 9:30."),
            (
                "Отследить посылку можно в приложении.",
                "Спасибо, что выбрали нас!",
                "Ожидаемая доставка: пятница.",
            ),
        ),
        "ar": (
            ("تم شحن طلبك رقم 48213.", "تذكير: موعدك غداً الساعة 9:30."),
            (
                "يمكنك تتبع الشحنة من التطبيق.",
                "شكراً لاختيارك خدماتنا.",
                "التسليم المتوقع يوم الجمعة.",
            ),
        ),
        "zh": (
            ("您的订单48213已发货。", "提醒：您的预约时间为明天上午9:30。"),
            ("可在应用中查看物流信息。", "感谢您的支持！", "预计周五送达。"),
        ),
        "emoji": (
            ("📦 Your order #48213 is on its way!", "🚗 Your driver is arriving."),
            ("🗓️ Delivery: Friday.", "🙏 Thanks for shopping with us.", "📍 Track it in the app."),
        ),
    },
    "marketing": {
        "en": (
            (
                "SALE! 30% off everything this weekend only.",
                "New arrivals are here.",
                "Members get free shipping all week.",
            ),
            (
                "Shop now at https://s.example/sale.",
                "Use code SPRING30 at checkout.",
                "Offer ends Sunday at midnight.",
                "Reply STOP to opt out.",
                "Visit your nearest store or order online for same-day pickup.",
                "Terms apply; see the website for details.",
            ),
        ),
        "ru": (
            ("Скидки до 30% только в эти выходные!", "Новая коллекция уже в магазинах."),
            ("Подробности на сайте.", "Отписаться: ответьте СТОП.", "Акция до воскресенья."),
        ),
        "ar": (
            ("تخفيضات حتى 30% هذا الأسبوع فقط!", "وصلت التشكيلة الجديدة."),
            ("تسوق الآن من موقعنا.", "للإلغاء أرسل STOP.", "العرض ساري حتى يوم الأحد."),
        ),
        "zh": (
            ("周末大促，全场七折！", "新品上市，欢迎选购。"),
            ("详情请访问官网。", "回复TD退订。", "活动截至周日。"),
        ),
        "emoji": (
            ("🔥 SALE! 30% off everything 🔥", "🎉 New arrivals just dropped!"),
            ("🛍️ Shop now.", "💸 Code SPRING30.", "⏰ Ends Sunday!", "❤️ See you soon."),
        ),
    },
}

GSM_LANGUAGES: tuple[str, ...] = ("en",)
UNICODE_LANGUAGES: tuple[str, ...] = ("ru", "ar", "zh", "emoji")

# Target length in characters per bucket: (GSM-7 range, UCS-2 range).
_LENGTHS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "single": ((20, 160), (12, 70)),
    "double": ((161, 306), (71, 134)),
    "multi": ((307, 765), (135, 335)),
    "long": ((766, 1500), (336, 900)),
}


@dataclass(frozen=True, slots=True)
class Body:
    text: str
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    has_code: bool  # contains CODE, to be replaced by digits


def _compose(rng: random.Random, openers: tuple[str, ...], filler: tuple[str, ...], n: int) -> str:
    """An opener, then filler sentences, until at least ``n`` characters; cut to ``n``."""
    parts = [rng.choice(openers)]
    length = len(parts[0])
    while length < n:
        s = rng.choice(filler)
        parts.append(s)
        length += len(s) + 1
    text = " ".join(parts)
    if len(text) > n:
        cut = text[:n]
        # A one-time code must survive the cut whole, or not at all.
        if CODE in text and CODE not in cut:
            cut = text[: text.index(CODE) + CODE_LEN]
        text = cut.rstrip() if len(cut.rstrip()) >= max(1, n // 2) else cut
    return text


def build_pool(
    seed: int, cls: str, unicode: bool, bucket: str, size: int = POOL_SIZE
) -> tuple[Body, ...]:
    """``size`` bodies of one class, alphabet and length bucket, seeded."""
    rng = random.Random(f"{seed}/bodies/{cls}/{unicode}/{bucket}")
    languages = UNICODE_LANGUAGES if unicode else GSM_LANGUAGES
    lo, hi = _LENGTHS[bucket][1 if unicode else 0]
    pool: list[Body] = []
    for _ in range(size):
        openers, filler = _TEXT[cls][rng.choice(languages)]
        text = _compose(rng, openers, filler, rng.randint(lo, hi))
        counted = segments.count(text)
        pool.append(Body(text, counted.encoding, counted.segments, CODE in text))
    return tuple(pool)
