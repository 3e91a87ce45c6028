"""clip.tokenize / SimpleTokenizer: OpenAI test vectors and agreement with open_clip."""
import pytest
import torch

import clip
from clip.simple_tokenizer import SimpleTokenizer, get_tokenizer

ENCODE_VECTORS = [
    ("a photo of a dog.", [320, 1125, 539, 320, 1929, 269]),
    ("a photo of a cat.", [320, 1125, 539, 320, 2368, 269]),
    ("a centered satellite photo of Annual Crop Land.", [320, 24584, 10316, 1125, 539, 2906, 9955, 973, 269]),
    ("Hello World!", [3306, 1002, 256]),
    ("&amp;amp; don't", [261, 847, 713]),
    ("  multiple   spaces\tand\nnewlines  ", [6470, 9006, 537, 1218, 3418]),
    ("café naïve", [15304, 1097, 35689, 563]),
    ("schÃ¶n", [844, 7255, 333]),
    ("{} texture.", [39025, 16505, 269]),
]
TOKENIZE_VECTORS = [
    ("a photo of a", [49406, 320, 1125, 539, 320, 49407]),
    ("X X X X abyssinian.", [49406, 343, 343, 343, 343, 16342, 690, 36638, 269, 49407]),
    ("a photo of a american bulldog, a type of pet.",
     [49406, 320, 1125, 539, 320, 2151, 15611, 267, 320, 3877, 539, 3703, 269, 49407]),
    ("banded texture.", [49406, 37804, 16505, 269, 49407]),
    ("a photo of a person doing Apply Eye Makeup.",
     [49406, 320, 1125, 539, 320, 2533, 1960, 4356, 3272, 5853, 269, 49407]),
    ("a photo of a 2000 AM General Hummer SUV.",
     [49406, 320, 1125, 539, 320, 273, 271, 271, 271, 687, 3658, 845, 7508, 15985, 269, 49407]),
]

# Class names of the benchmark datasets as their readers produce them (a sample of each dataset;
# ImageNet's 1000 names come from open_clip's metadata below).
CLASSNAMES = {
    "OxfordPets": ["abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound",
                   "beagle", "bengal", "birman", "bombay", "boxer", "british_shorthair",
                   "chihuahua", "egyptian_mau", "english_cocker_spaniel", "english_setter",
                   "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond",
                   "leonberger", "maine_coon", "miniature_pinscher", "newfoundland", "persian",
                   "pomeranian", "pug", "ragdoll", "russian_blue", "saint_bernard", "samoyed",
                   "scottish_terrier", "shiba_inu", "siamese", "sphynx", "staffordshire_bull_terrier",
                   "wheaten_terrier", "yorkshire_terrier"],
    "DescribableTextures": ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed",
                            "cracked", "crosshatched", "crystalline", "dotted", "fibrous", "flecked",
                            "freckled", "frilly", "gauzy", "grid", "grooved", "honeycombed", "interlaced",
                            "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley",
                            "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed",
                            "scaly", "smeared", "spiralled", "sprinkled", "stained", "stratified",
                            "striped", "studded", "swirly", "veined", "waffled", "woven", "wrinkled",
                            "zigzagged"],
    "EuroSAT": ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
                "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings",
                "River", "Sea or Lake"],
    "Caltech101": ["face", "leopard", "motorbike", "accordion", "airplane", "anchor", "ant",
                   "barrel", "bass", "dalmatian", "dollar_bill", "garfield", "yin_yang"],
    "Food101": ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "crème_brûlée",
                "eggs_benedict", "pho", "takoyaki", "tiramisu", "waffles"],
    "OxfordFlowers": ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
                      "english marigold", "tiger lily", "moon orchid", "bird of paradise",
                      "globe-flower", "purple coneflower", "king protea", "bishop of llandaff"],
    "StanfordCars": ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 BMW M3 Coupe",
                     "2007 Chevrolet Express Cargo Van", "2012 Hyundai Veloster Hatchback",
                     "2012 smart fortwo Convertible"],
    "FGVCAircraft": ["707-320", "727-200", "737-800", "A300B4", "ATR-42", "BAE 146-200",
                     "Cessna 172", "DHC-1", "F/A-18", "Falcon 2000", "Il-76", "MD-80", "Tu-134",
                     "Yak-42"],
    "SUN397": ["abbey", "outdoor apartment_building", "shop bakery", "indoor bazaar",
               "b/outdoor", "vegetation desert", "east_asia temple", "wild field"],
    "UCF101": ["Apply_Eye_Makeup", "Apply_Lipstick", "Baby_Crawling", "Playing_Daf", "Yo_Yo",
               "Jumping_Jack", "Soccer_Juggling", "Tai_Chi"],
}
TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.", "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.", "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.", "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.", "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.", "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
}
NON_ASCII = ["café naïve", "Straße", "日本語のテキスト", "Ελληνικά", "emoji 🐶🐱", "“curly quotes”",
             "ｆｕｌｌ－ｗｉｄｔｈ", "schÃ¶n", "naïve\u00a0nbsp", "Łódź", "Ørsted", "<|startoftext|> raw"]


def corpus():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = dict(CLASSNAMES, ImageNet=list(IMAGENET_CLASSNAMES))
    texts = []
    for dataset, classnames in names.items():
        for name in classnames:
            texts.append(TEMPLATES[dataset].format(name.replace("_", " ")))
            texts.append("X X X X " + name.replace("_", " ") + ".")
    return texts + NON_ASCII


@pytest.mark.parametrize("text,ids", ENCODE_VECTORS)
def test_encode_matches_official_vectors(text, ids):
    assert get_tokenizer().encode(text) == ids


@pytest.mark.parametrize("text,ids", TOKENIZE_VECTORS)
def test_tokenize_matches_official_vectors(text, ids):
    tokens = clip.tokenize(text)
    assert tokens.shape == (1, 77) and tokens.dtype == torch.int64
    assert tokens[0, :len(ids)].tolist() == ids
    assert tokens[0, len(ids):].eq(0).all()
    assert tokens.argmax(-1).item() == len(ids) - 1


def test_tokens_agree_with_open_clip_on_class_name_corpus():
    import open_clip

    texts = [t for t in corpus() if "<|" not in t]  # open_clip spells specials differently
    ours = clip.tokenize(texts)
    reference = open_clip.tokenize(texts)
    assert len(texts) > 1100
    mismatches = [texts[i] for i in range(len(texts)) if not torch.equal(ours[i], reference[i])]
    assert not mismatches, mismatches[:5]


def test_openai_special_token_spelling():
    assert get_tokenizer().encode("<|startoftext|>a dog<|endoftext|>") == [49406, 320, 1929, 49407]
    assert get_tokenizer().encode("<start_of_text>") == [49406]


def test_too_long_text_raises_unless_truncated():
    text = " ".join(["dog"] * 80)
    with pytest.raises(ValueError, match="context length 77"):
        clip.tokenize(text)
    tokens = clip.tokenize(text, truncate=True)
    assert tokens.shape == (1, 77)
    assert tokens[0, :3].tolist() == [49406, 1929, 1929]
    assert tokens[0, -3:].tolist() == [1929, 1929, 49407]


def test_short_context_and_batches():
    tokens = clip.tokenize(["a photo of a", "dog"], context_length=16)
    assert tokens.shape == (2, 16)
    assert tokens[1, :3].tolist() == [49406, 1929, 49407]
    with pytest.raises(ValueError):
        clip.tokenize("a photo of a dog in the park with many friends today", context_length=8)


def test_simple_tokenizer_decode_round_trip():
    tokenizer = SimpleTokenizer()
    ids = tokenizer.encode("a photo of a café")
    assert tokenizer.decode(ids).strip() == "a photo of a café"
    assert tokenizer.decode(torch.tensor(ids)).strip() == "a photo of a café"
    assert len(tokenizer.encoder) >= 49408 and tokenizer.encoder["in"] == 512
