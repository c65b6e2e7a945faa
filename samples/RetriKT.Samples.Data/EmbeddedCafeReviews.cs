using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.Samples.Data;

/// <summary>
/// The embedded default task: café reviews, labels "negative" / "positive". Written for RetriKT.MLNet's Quickstart
/// so the whole pipeline runs with no download: a seeded grammar produces an unlabeled pool (to pretrain a small
/// teacher in-process; no pretrained LLM can be shipped or downloaded), a 16-per-label few-shot training split, a
/// 16-per-label few-shot dev split, and a held-out test split, all disjoint. Like real reviews, some pool texts end
/// with a verdict ("overall it was great."), which is what lets a teacher pretrained on the pool act as a prompted
/// classifier.
/// </summary>
public static class EmbeddedCafeReviews
{
    /// <summary>The label set.</summary>
    public static IReadOnlyList<string> Labels { get; } = ["negative", "positive"];

    private static readonly string[] Aspects = ["coffee", "latte", "espresso", "tea", "croissant", "cake", "sandwich", "soup", "service", "staff",
        "barista", "music", "seating", "terrace", "wifi", "atmosphere", "menu", "breakfast", "muffin", "cappuccino", "hot chocolate", "bagel"];
    private static readonly string[] Good = ["delicious", "friendly", "cozy", "fresh", "perfect", "lovely", "warm", "excellent", "wonderful",
        "charming", "tasty", "quick", "generous", "relaxing", "spotless", "smooth"];
    private static readonly string[] Bad = ["bitter", "rude", "stale", "cold", "noisy", "overpriced", "dirty", "slow", "awful", "bland",
        "soggy", "burnt", "cramped", "disappointing", "greasy", "watery"];
    private static readonly string[] Intensifiers = ["really", "very", "quite", "so", "truly", "incredibly", "rather", "a bit"];
    private static readonly string[] Neutral = ["we came in on a rainy tuesday.", "i stopped by before work.", "we sat near the window.",
        "it is close to the train station.", "they open at seven.", "my friend ordered first.", "the place was half full.",
        "we visited with our kids.", "i had been there once before.", "the menu changes every season."];
    private static readonly string[] GoodEndings = ["i will definitely come back.", "highly recommended.", "we loved it.",
        "can't wait to return.", "a real gem.", "five stars from me."];
    private static readonly string[] BadEndings = ["i will not come back.", "not recommended.", "we regretted it.",
        "never again.", "a real letdown.", "one star from me."];
    private static readonly string[] GoodVerdicts = ["great", "wonderful", "excellent"];
    private static readonly string[] BadVerdicts = ["terrible", "awful", "horrible"];

    /// <summary>One review of the given polarity (0 negative, 1 positive).</summary>
    public static string Review(Random rng, int polarity, bool withVerdict)
    {
        string Pick(string[] a) => a[rng.Next(a.Length)];
        var good = polarity == 1;
        var parts = new List<string>();
        if (rng.NextDouble() < 0.35) parts.Add(Pick(Neutral));
        int clauses = 1 + rng.Next(2);
        for (int i = 0; i < clauses; i++)
        {
            // Mostly on-polarity words, with an occasional contrast clause as real reviews have.
            bool onPolarity = rng.NextDouble() < 0.85;
            var adjective = Pick(good == onPolarity ? Good : Bad);
            var aspect = Pick(Aspects);
            parts.Add(rng.Next(4) switch
            {
                0 => $"the {aspect} was {Pick(Intensifiers)} {adjective}.",
                1 => $"{Pick(Intensifiers)} {adjective} {aspect}.",
                2 => $"the {aspect} is {adjective} here.",
                _ => $"we found the {aspect} {adjective}.",
            });
        }
        if (rng.NextDouble() < 0.5) parts.Add(Pick(good ? GoodEndings : BadEndings));
        if (withVerdict) parts.Add($"overall it was {Pick(good ? GoodVerdicts : BadVerdicts)}.");
        return string.Join(' ', parts);
    }

    /// <summary>The unlabeled pretraining pool (about a third of it carries a closing verdict).</summary>
    public static IReadOnlyList<string> UnlabeledPool(int count = 4000, int seed = 7)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Review(rng, rng.Next(2), withVerdict: rng.NextDouble() < 0.35)).ToList();
    }

    /// <summary>The few-shot task: 16 per label train, 16 per label dev, <paramref name="testPerLabel"/> per label test; disjoint, no verdicts.</summary>
    public static FewShotTask Task(int testPerLabel = 100, int seed = 13)
    {
        var rng = new Random(seed);
        var seen = new HashSet<string>(UnlabeledPool());
        List<TextPairRow> Split(int perLabel)
        {
            var rows = new List<TextPairRow>();
            foreach (var label in new[] { 0, 1 })
                while (rows.Count(r => r.Label == Labels[label]) < perLabel)
                {
                    var text = Review(rng, label, withVerdict: false);
                    if (seen.Add(text)) rows.Add(new TextPairRow { Text = text, Label = Labels[label] });
                }
            return rows.OrderBy(_ => rng.Next()).ToList();
        }
        var template = new TaskTemplate
        {
            Name = "CafeReviews",
            ClassificationFormat = "{text} overall it was{label}",
            Verbalizer = new Dictionary<string, string> { ["negative"] = " terrible", ["positive"] = " great" },
            MaxNewTokens = 32,
        };
        return new FewShotTask("CafeReviews", seed, Labels, template, Split(16), Split(16), Split(testPerLabel));
    }
}
