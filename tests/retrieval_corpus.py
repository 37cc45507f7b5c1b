"""A small bilingual corpus for the retrieval-quality test: twenty topics, each with one English
and one Chinese document (written independently, not as translations), and for each topic one
English and one Chinese question. A question's relevant documents are both of its topic's, so an
English question must find the Chinese document too (cross-language) and the reverse.

The topics are split in two, deterministically: alternate topics in alphabetical order are the
tuning half (what the ranking's weights were chosen on) and the held-out half (what the thresholds
of ``test_retrieval_quality.py`` are asserted on). ``PARAPHRASES`` are eight more questions on
held-out topics (``TUNING_PARAPHRASES`` eight on tuning topics), written before any tuning, that share as few words with their documents as
possible: they ask the same thing in other words."""

from __future__ import annotations

# topic: (English document, Chinese document, English question, Chinese question)
TOPICS: dict[str, tuple[str, str, str, str]] = {
    "sourdough": (
        "A sourdough starter is a mix of flour and water colonised by wild yeast and lactic acid "
        "bacteria. Feed it every day, keep it at room temperature, and use it when it doubles in size.",
        "酸面团酵头由面粉和水混合而成，里面有野生酵母和乳酸菌。每天喂养一次，放在室温下，体积膨胀一倍时就可以用来烤面包。",
        "How often should I feed my bread starter with flour and water?",
        "做酸面包的酵头多久喂一次？",
    ),
    "tides": (
        "Ocean tides are caused mainly by the Moon's gravity pulling on the Earth's water. Most coasts "
        "see two high tides and two low tides every lunar day, and spring tides follow the full and new moon.",
        "海洋潮汐主要由月球引力造成。大多数海岸每天有两次涨潮和两次落潮，新月和满月之后会出现大潮。",
        "Why does the sea rise and fall twice a day?",
        "潮汐是什么原因引起的？",
    ),
    "photosynthesis": (
        "Photosynthesis lets plants turn sunlight, carbon dioxide and water into glucose and oxygen. "
        "It happens in the chloroplasts, where chlorophyll absorbs red and blue light.",
        "光合作用是植物利用阳光、二氧化碳和水制造葡萄糖并释放氧气的过程，发生在叶绿体中，叶绿素主要吸收红光和蓝光。",
        "How do plants make sugar from sunlight?",
        "植物的叶绿体里发生什么过程？",
    ),
    "password": (
        "To reset your account password, open Settings, choose Security, and click Forgot password. "
        "A reset link is sent to your email and expires after thirty minutes.",
        "如果忘记密码，请打开设置，进入安全页面，点击忘记密码。系统会向您的邮箱发送重置链接，链接三十分钟后失效。",
        "I forgot my password, how do I get a reset link?",
        "忘记密码怎么重置？",
    ),
    "refund": (
        "Refund policy: products can be returned within 30 days of delivery for a full refund. Items "
        "must be unused and in the original packaging; shipping costs are not refunded.",
        "退款政策：商品签收后三十天内可以退货并全额退款。商品必须未使用且保留原包装，运费不予退还。",
        "Can I return an item and get my money back after two weeks?",
        "买的东西不想要了，多少天内可以退货退款？",
    ),
    "great_wall": (
        "The Great Wall of China was built over many dynasties to protect against northern nomads. "
        "Most of the wall visible today dates from the Ming dynasty and runs for thousands of kilometres.",
        "长城是中国古代为了抵御北方游牧民族而修建的防御工程，历经多个朝代。今天看到的大部分城墙是明朝修建的，绵延数千公里。",
        "Which dynasty built most of the Great Wall we see today?",
        "现在看到的长城大多是哪个朝代修的？",
    ),
    "python_lists": (
        "In Python, a list is an ordered, mutable sequence. Use append to add an element at the end, "
        "insert to put one at a position, and sort to order the list in place.",
        "在Python中，列表是有序且可变的序列。用append在末尾添加元素，用insert在指定位置插入，用sort对列表原地排序。",
        "How do I add an element to the end of a Python list?",
        "Python列表怎么在末尾添加元素？",
    ),
    "coffee": (
        "Espresso is brewed by forcing hot water at about nine bars of pressure through finely ground "
        "coffee. A shot takes 25 to 30 seconds and has a layer of crema on top.",
        "意式浓缩咖啡是用约九个大气压的热水快速穿过细研磨的咖啡粉制成的，一杯大约需要二十五到三十秒，表面有一层油脂。",
        "What pressure does an espresso machine use?",
        "浓缩咖啡萃取需要多少压力和时间？",
    ),
    "marathon": (
        "Training for a marathon usually takes sixteen to twenty weeks. Build weekly mileage slowly, do "
        "one long run each week, and taper for two weeks before the race.",
        "准备马拉松比赛通常需要十六到二十周的训练。每周逐渐增加跑量，每周进行一次长距离跑，赛前两周减量调整。",
        "How many weeks does it take to prepare for a marathon race?",
        "跑全程马拉松要训练多久？",
    ),
    "vaccines": (
        "Vaccines train the immune system by exposing it to a harmless piece or weakened form of a "
        "pathogen, so the body makes antibodies and memory cells before a real infection.",
        "疫苗通过让免疫系统接触病原体的无害片段或减毒形式来训练身体，使人体在真正感染之前产生抗体和记忆细胞。",
        "How does a vaccine teach the immune system to fight a virus?",
        "疫苗是怎样让身体产生抗体的？",
    ),
    "tea": (
        "Green tea is not oxidised, while black tea is fully oxidised, which gives it a darker colour "
        "and stronger flavour. Oolong sits in between. Brew green tea with water below boiling.",
        "绿茶是不发酵茶，红茶是全发酵茶，所以红茶颜色更深、味道更浓，乌龙茶介于两者之间。泡绿茶的水温不宜太高。",
        "What is the difference between green tea and black tea?",
        "绿茶和红茶有什么区别？",
    ),
    "earthquake": (
        "During an earthquake, drop to the ground, take cover under a sturdy table, and hold on until "
        "the shaking stops. Stay away from windows and do not use elevators.",
        "地震发生时，应立即趴下，躲到结实的桌子下面并抓牢，直到震动停止。远离窗户，不要乘坐电梯。",
        "What should I do when the ground starts shaking in a quake?",
        "发生地震时应该怎么躲避？",
    ),
    "panda": (
        "Giant pandas live in the mountain forests of Sichuan, Shaanxi and Gansu. Bamboo makes up more "
        "than ninety-nine percent of their diet, and an adult eats up to forty kilograms a day.",
        "大熊猫生活在四川、陕西和甘肃的山区森林中，竹子占它们食物的百分之九十九以上，成年大熊猫每天要吃多达四十公斤竹子。",
        "What do giant pandas eat and where do they live?",
        "大熊猫每天吃多少竹子？",
    ),
    "sleep": (
        "Adults need seven to nine hours of sleep a night. Keep a regular schedule, avoid caffeine in "
        "the afternoon, and keep screens out of the bedroom to fall asleep more easily.",
        "成年人每晚需要七到九个小时的睡眠。保持规律的作息，下午避免摄入咖啡因，卧室里不要看手机，这样更容易入睡。",
        "How many hours of sleep does an adult need?",
        "成年人每天应该睡几个小时？",
    ),
    "solar_panels": (
        "Solar panels convert sunlight into electricity with photovoltaic cells made of silicon. An "
        "inverter turns their direct current into alternating current for the home.",
        "太阳能电池板利用硅制成的光伏电池把阳光转化为电能，逆变器再把直流电转换成家庭使用的交流电。",
        "How do photovoltaic panels produce electricity for a house?",
        "太阳能发电需要逆变器做什么？",
    ),
    "mortgage": (
        "A mortgage is a loan to buy a home, repaid in monthly instalments over fifteen to thirty "
        "years. A fixed rate keeps the interest the same; a variable rate follows the market.",
        "房贷是用来买房的贷款，通常分十五到三十年按月还款。固定利率的利息保持不变，浮动利率则随市场变化。",
        "Should I pick a fixed or variable interest rate for my home loan?",
        "买房贷款固定利率和浮动利率有什么不同？",
    ),
    "git_branch": (
        "In git, create a branch with git switch -c name, commit your changes there, and merge it "
        "back into main with git merge or a pull request when the work is done.",
        "在git中，用git switch -c创建新分支，在分支上提交修改，完成后通过git merge或者合并请求把分支合并回主分支。",
        "How do I create a new branch in git and merge it later?",
        "git怎么新建分支并合并回主分支？",
    ),
    "dumplings": (
        "To make dumplings, mix minced pork with cabbage, ginger and soy sauce, wrap spoonfuls in thin "
        "dough wrappers, and boil them until they float, then a few minutes more.",
        "包饺子时，把猪肉馅和白菜、姜、酱油拌匀，用擀好的饺子皮包起来，下锅煮到饺子浮起来后再煮几分钟。",
        "What filling goes into pork dumplings and how long do I boil them?",
        "饺子馅怎么调，煮饺子要煮多久？",
    ),
    "volcano": (
        "A volcano erupts when magma from the mantle rises through the crust. Pressure from dissolved "
        "gases builds up until lava, ash and gas are thrown out of the vent.",
        "火山喷发是因为地幔中的岩浆沿着地壳上升，岩浆中溶解的气体压力不断积累，最终把熔岩、火山灰和气体从火山口喷出。",
        "Why do volcanoes erupt lava and ash?",
        "火山为什么会喷发？",
    ),
    "invoice": (
        "Invoices are issued on the first business day of each month and are due within fifteen days. "
        "Late payments incur a fee of two percent per month on the outstanding balance.",
        "每月第一个工作日开具发票，需在十五天内付款。逾期付款将按未付余额每月收取百分之二的滞纳金。",
        "When is an invoice due and what is the late payment fee?",
        "发票逾期付款要交多少滞纳金？",
    ),
}


def documents() -> list[tuple[str, str]]:
    """``(document id, text)``: ``<topic>.en`` and ``<topic>.zh``."""
    out: list[tuple[str, str]] = []
    for topic, (en, zh, _, _) in TOPICS.items():
        out += [(f"{topic}.en", en), (f"{topic}.zh", zh)]
    return out


def queries(language: str) -> list[tuple[str, set[str]]]:
    """``(question, relevant document ids)`` in ``language`` (``en`` or ``zh``)."""
    column = 2 if language == "en" else 3
    return [(q[column], {f"{topic}.en", f"{topic}.zh"}) for topic, q in TOPICS.items()]


TUNING = frozenset(sorted(TOPICS)[0::2])
HELD_OUT = frozenset(sorted(TOPICS)[1::2])

# tuning topic: question in other words (what the fusion's weights were chosen on)
TUNING_PARAPHRASES: list[tuple[str, str]] = [
    ("coffee", "How much force goes into pulling a short strong cup from the machine?"),
    ("marathon", "How long should I get ready before running 42 kilometres?"),
    ("panda", "What does the black-and-white bear of China feed on?"),
    ("refund", "Am I able to send back a purchase I no longer want?"),
    ("earthquake", "地面剧烈晃动的时候该躲在哪里？"),
    ("great_wall", "北方那道万里城防主要建于哪个年代？"),
    ("tea", "发酵过的茶叶和没发酵的有啥不一样？"),
    ("vaccines", "打针预防传染病的原理是什么？"),
]

# held-out topic: question in other words (four English, four Chinese)
PARAPHRASES: list[tuple[str, str]] = [
    ("invoice", "How long do I have to settle a bill before I am charged extra?"),
    ("sleep", "What is a healthy amount of rest per night for grown-ups?"),
    ("volcano", "What makes molten rock burst out of a mountain?"),
    ("mortgage", "Is it better to lock the cost of borrowing for a house or let it float?"),
    ("sourdough", "天然酵种需要多久补充一次面粉？"),
    ("password", "登录密码想不起来了该怎么办？"),
    ("tides", "海水为什么每天会涨落两次？"),
    ("git_branch", "在版本库里怎样开一条新的开发线，之后再并回去？"),
]


def half_documents(topics: frozenset[str]) -> list[tuple[str, str]]:
    return [(doc_id, text) for doc_id, text in documents() if doc_id.split(".")[0] in topics]


def half_queries(language: str, topics: frozenset[str]) -> list[tuple[str, set[str]]]:
    return [
        (q, relevant) for q, relevant in queries(language) if next(iter(relevant)).split(".")[0] in topics
    ]
