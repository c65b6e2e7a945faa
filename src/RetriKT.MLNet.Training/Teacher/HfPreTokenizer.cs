using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace RetriKT.MLNet.Teacher;

/// <summary>
/// The text side of a Hugging Face byte-level BPE <c>tokenizer.json</c>, as the <c>tokenizers</c> library runs it:
/// the <c>pre_tokenizer</c> (<c>ByteLevel</c>, <c>Split</c>, <c>Digits</c>, <c>Sequence</c> of these) and the
/// <c>normalizer</c> (<c>NFC</c>/<c>NFD</c>/<c>NFKC</c>/<c>NFKD</c>, <c>Sequence</c> of these). Anything else is refused
/// with one line naming the file and the type, rather than read as something close. The pieces returned are still
/// text; the BPE model maps each piece's UTF-8 bytes to GPT-2's byte alphabet.
/// </summary>
internal sealed class HfPreTokenizer
{
    // GPT-2's split (ByteLevel with use_regex true): contractions, letters, digits, other, whitespace runs not before a non-space.
    internal const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Func<string, IEnumerable<string>>[] _steps;

    private HfPreTokenizer(Func<string, IEnumerable<string>>[] steps) => _steps = steps;

    /// <summary>GPT-2's pre-tokenizer: <c>ByteLevel</c> with <c>use_regex</c> true and no prefix space (vocab.json + merges.txt).</summary>
    internal static HfPreTokenizer Gpt2 { get; } = new([ByteLevel(addPrefixSpace: false, useRegex: true)]);

    /// <summary>Splits <paramref name="text"/> (one section between added tokens, already normalized) into pre-tokens.</summary>
    internal List<string> Split(string text)
    {
        IEnumerable<string> pieces = [text];
        foreach (var step in _steps) pieces = pieces.SelectMany(step).Where(p => p.Length > 0).ToList();
        return pieces as List<string> ?? pieces.ToList();
    }

    /// <summary>
    /// Reads <c>pre_tokenizer</c>. Its one <c>ByteLevel</c> step must come last (as in every real byte-level file):
    /// that step maps bytes to GPT-2's alphabet, which the BPE model here does after the split, so a Split after it,
    /// or none at all, would see other text than HF's.
    /// </summary>
    internal static HfPreTokenizer FromJson(JsonNode? node, string path)
    {
        var steps = new List<(string Type, Func<string, IEnumerable<string>> Step)>();
        if (node is not null) AddSteps(node, path, steps);
        if (steps.Count(s => s.Type == "ByteLevel") != 1 || steps[^1].Type != "ByteLevel")
            throw new NotSupportedException($"{path}: pre_tokenizer [{string.Join(", ", steps.Select(s => s.Type))}] is not supported (a byte-level BPE needs exactly one ByteLevel step, the last).");
        return new HfPreTokenizer([.. steps.Select(s => s.Step)]);
    }

    private static void AddSteps(JsonNode node, string path, List<(string, Func<string, IEnumerable<string>>)> steps)
    {
        var type = node["type"]?.GetValue<string>();
        switch (type)
        {
            case "Sequence":
                foreach (var inner in node["pretokenizers"]?.AsArray() ?? throw new InvalidDataException($"{path}: pre_tokenizer Sequence has no 'pretokenizers'."))
                    AddSteps(inner!, path, steps);
                return;
            case "ByteLevel":
                steps.Add((type, ByteLevel(node["add_prefix_space"]?.GetValue<bool>() ?? true, node["use_regex"]?.GetValue<bool>() ?? true)));
                return;
            case "Split":
                steps.Add((type, SplitStep(node, path)));
                return;
            case "Digits":
                var regex = new Regex(node["individual_digits"]?.GetValue<bool>() == true ? @"\p{N}" : @"\p{N}+", RegexOptions.CultureInvariant);
                steps.Add((type, text => Isolated(regex, text)));
                return;
            default:
                throw new NotSupportedException($"{path}: pre_tokenizer type '{type}' is not supported (supported: ByteLevel, Split, Digits, Sequence).");
        }
    }

    private static Func<string, IEnumerable<string>> ByteLevel(bool addPrefixSpace, bool useRegex)
    {
        var gpt2 = new Regex(Gpt2Pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);
        return text =>
        {
            // HF prepends the space to every piece it gets from the steps before, not only to the whole text.
            if (addPrefixSpace && !text.StartsWith(' ')) text = " " + text;
            return useRegex ? Isolated(gpt2, text) : [text];
        };
    }

    private static Func<string, IEnumerable<string>> SplitStep(JsonNode node, string path)
    {
        var pattern = node["pattern"] as JsonObject ?? throw new InvalidDataException($"{path}: pre_tokenizer Split has no 'pattern'.");
        Regex regex = pattern["Regex"]?.GetValue<string>() is { } re ? new Regex(re, RegexOptions.CultureInvariant | RegexOptions.Compiled)
            : pattern["String"]?.GetValue<string>() is { } literal ? new Regex(Regex.Escape(literal), RegexOptions.CultureInvariant)
            : throw new NotSupportedException($"{path}: pre_tokenizer Split pattern {pattern.ToJsonString()} is not supported (expected Regex or String).");
        bool invert = node["invert"]?.GetValue<bool>() ?? false;
        return node["behavior"]?.GetValue<string>() switch
        {
            // Isolated keeps every piece, so inverting the pattern changes nothing.
            "Isolated" => text => Isolated(regex, text),
            "Removed" => text => Pieces(regex, text).Where(p => p.IsMatch == invert).Select(p => text[p.Start..p.End]),
            var behavior => throw new NotSupportedException($"{path}: pre_tokenizer Split behavior '{behavior}' is not supported (supported: Isolated, Removed)."),
        };
    }

    private static IEnumerable<string> Isolated(Regex regex, string text) => Pieces(regex, text).Select(p => text[p.Start..p.End]);

    /// <summary>
    /// The matches of <paramref name="regex"/> and the text between them, in order, as HF's <c>find_matches</c> gives
    /// them (empty pieces dropped). HF matches code points (Oniguruma on UTF-8); .NET matches UTF-16 units and sees
    /// the two halves of a surrogate pair as category Cs, not as the letter or digit they encode. So a character
    /// outside the BMP is matched as a BMP stand-in of its own Unicode category and the offsets mapped back, which
    /// is exact for patterns that name categories (\p{L}, \p{N}, \s) and ASCII literals, as the real ones do.
    /// </summary>
    private static List<(int Start, int End, bool IsMatch)> Pieces(Regex regex, string text)
    {
        string subject = text;
        int[]? map = null; // map[i] = offset in text of subject[i]; map[^1] = text.Length
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0)
        {
            var sb = new StringBuilder(text.Length);
            var offsets = new List<int>(text.Length + 1);
            for (int i = 0; i < text.Length;)
            {
                offsets.Add(i);
                if (Rune.TryGetRuneAt(text, i, out var rune) && rune.Utf16SequenceLength == 2)
                {
                    sb.Append(StandIn[(int)Rune.GetUnicodeCategory(rune)]);
                    i += 2;
                }
                else { sb.Append(text[i]); i++; }
            }
            offsets.Add(text.Length);
            subject = sb.ToString(); map = [.. offsets];
        }
        var pieces = new List<(int, int, bool)>();
        int prev = 0;
        foreach (Match m in regex.Matches(subject))
        {
            if (m.Index > prev) pieces.Add((prev, m.Index, false));
            if (m.Length > 0) pieces.Add((m.Index, m.Index + m.Length, true));
            prev = m.Index + m.Length;
        }
        if (prev < subject.Length) pieces.Add((prev, subject.Length, false));
        return map is null ? pieces : pieces.Select(p => (map[p.Item1], map[p.Item2], p.Item3)).ToList();
    }

    // For each Unicode category, the first BMP character above U+00FF that has it (U+E000, private use, if none does).
    private static readonly char[] StandIn = BuildStandIns();

    private static char[] BuildStandIns()
    {
        var table = new char[32];
        Array.Fill(table, '\uE000');
        var found = new bool[32];
        for (int c = 0x100; c <= 0xFFFF; c++)
        {
            if (c is >= 0xD800 and <= 0xDFFF) continue;
            int cat = (int)CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (!found[cat]) { found[cat] = true; table[cat] = (char)c; }
        }
        return table;
    }

    /// <summary>Reads <c>normalizer</c>: null, NFC/NFD/NFKC/NFKD or a Sequence of them; returns null for none.</summary>
    internal static Func<string, string>? Normalizer(JsonNode? node, string path)
    {
        if (node is null) return null;
        var type = node["type"]?.GetValue<string>();
        switch (type)
        {
            case "NFC": return s => s.Normalize(NormalizationForm.FormC);
            case "NFD": return s => s.Normalize(NormalizationForm.FormD);
            case "NFKC": return s => s.Normalize(NormalizationForm.FormKC);
            case "NFKD": return s => s.Normalize(NormalizationForm.FormKD);
            case "Sequence":
                var parts = (node["normalizers"]?.AsArray() ?? throw new InvalidDataException($"{path}: normalizer Sequence has no 'normalizers'."))
                    .Select(n => Normalizer(n, path)).Where(f => f is not null).Select(f => f!).ToArray();
                return s => parts.Aggregate(s, (acc, f) => f(acc));
            default:
                throw new NotSupportedException($"{path}: normalizer type '{type}' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence).");
        }
    }
}

/// <summary>
/// HF <c>added_tokens</c>: matched whole before normalization and pre-tokenization, leftmost and then longest first,
/// as HF's <c>AddedVocabulary</c> does. Tokens with <c>normalized</c> false are looked for in the raw text; those with
/// <c>normalized</c> true in each remaining section after normalization (their content normalized too).
/// <c>lstrip</c>/<c>rstrip</c> swallow the whitespace before/after a match. <c>single_word</c> is refused.
/// </summary>
internal sealed class HfAddedTokens
{
    private readonly Dictionary<char, (string Content, int Id, bool LStrip, bool RStrip)[]> _raw, _normalized;

    /// <summary>Every added token's content (as written in the file) and id.</summary>
    internal Dictionary<string, int> Ids { get; } = new(StringComparer.Ordinal);

    internal HfAddedTokens(JsonArray? tokens, Func<string, string>? normalize, string path)
    {
        var raw = new List<(string, int, bool, bool)>();
        var normalized = new List<(string, int, bool, bool)>();
        foreach (var t in tokens ?? [])
        {
            var content = t?["content"]?.GetValue<string>();
            if (t?["id"]?.GetValue<int>() is not int id || string.IsNullOrEmpty(content)) continue;
            if (t["single_word"]?.GetValue<bool>() == true)
                throw new NotSupportedException($"{path}: added token '{content}' has single_word true, which is not supported.");
            Ids.TryAdd(content, id);
            bool special = t["special"]?.GetValue<bool>() ?? false;
            bool isNormalized = (t["normalized"]?.GetValue<bool>() ?? !special) && normalize is not null;
            var entry = (isNormalized ? normalize!(content) : content, id, t["lstrip"]?.GetValue<bool>() ?? false, t["rstrip"]?.GetValue<bool>() ?? false);
            (isNormalized ? normalized : raw).Add(entry);
        }
        _raw = Index(raw); _normalized = Index(normalized);
    }

    private static Dictionary<char, (string, int, bool, bool)[]> Index(List<(string Content, int Id, bool, bool)> tokens) =>
        tokens.Where(t => t.Content.Length > 0).GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());

    /// <summary>Sections of <paramref name="text"/>: (text, null) to tokenize further, or (content, id) for an added token.</summary>
    internal List<(string Text, int? Id)> Split(string text, bool normalizedPass)
    {
        var index = normalizedPass ? _normalized : _raw;
        var result = new List<(string Text, int? Id)>();
        if (index.Count == 0) { result.Add((text, null)); return result; }
        int start = 0;
        for (int i = 0; i < text.Length;)
        {
            var match = index.TryGetValue(text[i], out var candidates)
                ? candidates.FirstOrDefault(c => string.CompareOrdinal(text, i, c.Content, 0, c.Content.Length) == 0) : default;
            if (match.Content is null) { i++; continue; }
            var before = text[start..i];
            if (match.LStrip) before = before.TrimEnd();
            if (before.Length > 0) result.Add((before, null));
            result.Add((match.Content, match.Id));
            i += match.Content.Length;
            if (match.RStrip) while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            start = i;
        }
        if (start < text.Length) result.Add((text[start..], null));
        return result;
    }
}
