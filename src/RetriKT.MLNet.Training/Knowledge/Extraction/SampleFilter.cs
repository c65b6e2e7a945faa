using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.Knowledge.Extraction;

/// <summary>Why a generated sample was not kept.</summary>
public enum DropReason
{
    /// <summary>Nothing usable was generated (empty, or a pair sample without its second part).</summary>
    Empty,
    /// <summary>Fewer words than the minimum.</summary>
    TooShort,
    /// <summary>More words than the maximum.</summary>
    TooLong,
    /// <summary>The teacher's probability of the intended label is below the threshold, or another label is more probable.</summary>
    LowFidelity,
    /// <summary>
    /// Same normalised text (lower-cased words of letters, digits and apostrophes; punctuation dropped) as a few-shot
    /// example or an earlier kept sample.
    /// </summary>
    ExactDuplicate,
    /// <summary>Estimated word-trigram Jaccard similarity (MinHash) at or above the threshold to a text that <see cref="ExactDuplicate"/> compares with.</summary>
    NearDuplicate,
    /// <summary>
    /// The label already has its quota. Judged last, after the duplicate checks; a sample dropped over quota is not
    /// remembered, so it never makes a later sample a duplicate of a text that is not in the store.
    /// </summary>
    OverQuota,
    /// <summary>
    /// Less fluent than every few-shot example: the plain teacher's mean per-token negative log-likelihood of the sample
    /// is above the highest among the few-shot examples (garbled text such as "iny tuesday").
    /// </summary>
    Disfluent,
    /// <summary>
    /// Generation stopped at the token limit, not at an end token or a stop sequence: the text is cut off, often mid-word
    /// ("… a big yellow dependab"). Judged right after Empty, only when the extractor's <c>DropUnfinished</c> is on.
    /// </summary>
    Unfinished,
}

/// <summary>
/// The fluency check: mean per-token negative log-likelihood of a sample under the plain teacher (no soft prompt),
/// against a threshold taken from the task's own few-shot examples, so it adapts to the teacher and the task.
/// </summary>
internal sealed class FluencyFilter
{
    private readonly RetriKT.MLNet.Teacher.TeacherModel _teacher;
    private readonly TaskTemplate _template;

    public FluencyFilter(RetriKT.MLNet.Teacher.TeacherModel teacher, TaskTemplate template, IEnumerable<(string Text, string? Text2)> references, double margin)
    {
        _teacher = teacher;
        _template = template;
        var reference = MeanTokenNll(references.ToList());
        Threshold = reference.Length == 0 ? double.PositiveInfinity : reference.Max() + margin;
    }

    /// <summary>
    /// Names how <see cref="MeanTokenNll"/> computes its values; extraction checkpoints store NLLs under it and reuse only
    /// those written under the same name. Change it whenever the measure changes. v2: a second part is scored after a
    /// space, as the soft prompt is trained and generation writes it (v1 scored "…Question:Is it…", glued to the context).
    /// </summary>
    public const string Version = "mean-token-nll-v2";

    /// <summary>Samples whose mean per-token NLL is above this are dropped.</summary>
    public double Threshold { get; }

    /// <summary>Mean per-token NLL of each sample's generated part given its visible context.</summary>
    public double[] MeanTokenNll(IReadOnlyList<(string Text, string? Text2)> samples)
    {
        var usable = samples.Select((s, i) => (s, i)).Where(x => !string.IsNullOrWhiteSpace(_template.RenderTarget(x.s.Text, x.s.Text2))).ToList();
        var result = Enumerable.Repeat(double.PositiveInfinity, samples.Count).ToArray();
        if (usable.Count == 0) return result;
        var prefixes = usable.Select(x => _template.RenderContext(x.s.Text)).ToList();
        var targets = usable.Select(x => _template.RenderContinuation(x.s.Text, x.s.Text2)).ToList();
        var meanLogLikelihoods = _teacher.MeanTokenLogLikelihoods(prefixes, targets);
        // A NaN (a teacher that overflows on some text) is no fluency: it passed the filter (NaN > threshold is false),
        // and a resumed extraction, which reads a stored non-finite NLL as +∞, dropped the same sample.
        for (int j = 0; j < usable.Count; j++) result[usable[j].i] = double.IsNaN(meanLogLikelihoods[j]) ? double.PositiveInfinity : -meanLogLikelihoods[j];
        return result;
    }
}

/// <summary>
/// The filters every extraction path applies to a generated sample, in this order: empty, length (words of what was
/// generated), fidelity (teacher probability of the intended label, optionally also its argmax), then exact and near
/// duplicates against everything admitted so far. Shared by the white-box and the black-box extractors so both keep
/// the same samples for the same inputs.
/// </summary>
internal sealed class SampleJudge(TaskTemplate template, int minWords, int maxWords, double fidelityThreshold, bool requireArgmax, double nearDuplicateThreshold,
    bool dropUnfinished)
{
    /// <summary>Texts seen so far (seed it with the few-shot examples so generated copies of them are dropped).</summary>
    public DuplicateFilter Duplicates { get; } = new(nearDuplicateThreshold);

    /// <summary>
    /// Whether a generated sample has text, as the Empty filter sees it: a first text, and for a pair template a second
    /// one (the generated part of a second-part task). What <see cref="IntendedLabelTally"/> counts. A text of only
    /// characters the student's tokenizer drops (zero-width spaces, control characters) has none: the decision is
    /// <see cref="TaskTemplate.MissingText"/>'s, the one every reader of texts to label uses.
    /// </summary>
    public static bool HasText(TaskTemplate template, string? text, string? text2) => template.MissingText(text ?? "", text2) is null;

    /// <summary>Why the sample is dropped, or null when it is kept (and then remembered by <see cref="Duplicates"/>).</summary>
    /// <remarks>
    /// <paramref name="finished"/>: generation ended at an end token or stop sequence, not at the token limit (judged right
    /// after Empty). <paramref name="disfluent"/>: the fluency check failed (see <see cref="FluencyFilter"/>); judged after
    /// fidelity, before duplicates. <paramref name="labelFull"/>: the sample's label has its quota; judged last
    /// (<see cref="DropReason.OverQuota"/>), and such a sample is not remembered.
    /// </remarks>
    public DropReason? Judge(string text, string? text2, float[] probabilities, int label, bool finished, bool disfluent = false, bool labelFull = false)
    {
        if (TextReason(text, text2, finished, out int words) is { } early) return early;
        if (words < minWords) return DropReason.TooShort;
        if (words > maxWords) return DropReason.TooLong;
        var p = probabilities;
        if (p[label] < fidelityThreshold || (requireArgmax && p.Max() > p[label])) return DropReason.LowFidelity;
        if (disfluent) return DropReason.Disfluent;
        return Duplicates.Admit(template.RenderTarget(text, text2), remember: !labelFull) ?? (labelFull ? DropReason.OverQuota : null);
    }

    /// <summary>
    /// For a sample the teacher gave no label: Empty or Unfinished where <see cref="Judge"/> would say so, else null (the
    /// caller drops it as LowFidelity). It remembers nothing: judged with a made-up all-zero label instead, a sample
    /// passed a fidelity threshold of 0 and its text was remembered as kept, so a later labelled copy of it was dropped
    /// as a duplicate of a sample that is not in the store.
    /// </summary>
    public DropReason? JudgeUnlabelled(string text, string? text2, bool finished) => TextReason(text, text2, finished, out _);

    /// <summary>The checks of the text alone, in <see cref="Judge"/>'s order; <paramref name="words"/> counts the generated part's words.</summary>
    private DropReason? TextReason(string text, string? text2, bool finished, out int words)
    {
        words = 0;
        if (!HasText(template, text, text2)) return DropReason.Empty;
        if (dropUnfinished && !finished) return DropReason.Unfinished;
        words = TextStatistics.Words(template.Target == GenerationTarget.SecondPart ? text2! : template.RenderTarget(text, text2)).Count;
        return words == 0 ? DropReason.Empty : null;
    }
}

/// <summary>
/// Exact and near-duplicate detection over word trigram shingles: exact by normalised text, near by MinHash
/// signatures (64 hash functions; estimated Jaccard = share of equal minima), compared against every kept text.
/// </summary>
internal sealed class DuplicateFilter
{
    private const int Hashes = 64;
    private readonly double _threshold;
    private readonly HashSet<string> _exact = new(StringComparer.Ordinal);
    private readonly List<uint[]> _signatures = [];

    public DuplicateFilter(double nearDuplicateThreshold) => _threshold = nearDuplicateThreshold;

    public static string Normalise(string text) => string.Join(' ', TextStatistics.Words(text));

    /// <summary>Checks a text and, when it is new and <paramref name="remember"/>, remembers it.</summary>
    public DropReason? Admit(string text, bool remember = true)
    {
        var normalised = Normalise(text);
        if (_exact.Contains(normalised)) return DropReason.ExactDuplicate;
        var signature = Signature(normalised);
        if (_threshold < 1)
            foreach (var other in _signatures)
            {
                int equal = 0;
                for (int i = 0; i < Hashes; i++) if (other[i] == signature[i]) equal++;
                if ((double)equal / Hashes >= _threshold) return DropReason.NearDuplicate;
            }
        if (remember)
        {
            _exact.Add(normalised);
            _signatures.Add(signature);
        }
        return null;
    }

    private static uint[] Signature(string normalised)
    {
        var words = normalised.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var shingles = new List<uint>();
        if (words.Length < 3) shingles.Add(Fnv(normalised));
        for (int i = 0; i + 3 <= words.Length; i++) shingles.Add(Fnv(words[i] + " " + words[i + 1] + " " + words[i + 2]));
        var signature = new uint[Hashes];
        for (int h = 0; h < Hashes; h++)
        {
            uint min = uint.MaxValue;
            uint a = (uint)(2654435761u * (h + 1)) | 1u, b = (uint)(40503u * (h + 7));
            foreach (var s in shingles) min = Math.Min(min, unchecked(a * s + b) ^ (s >> 13));
            signature[h] = min;
        }
        return signature;
    }

    private static uint Fnv(string s)
    {
        uint h = 2166136261;
        foreach (var c in s) { h ^= c; h *= 16777619; }
        return h;
    }
}
