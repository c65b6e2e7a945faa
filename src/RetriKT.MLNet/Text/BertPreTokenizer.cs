using System.Globalization;
using System.Text;

namespace RetriKT.MLNet.Text;

/// <summary>
/// BERT's "basic" tokenization exactly as the reference (HF BasicTokenizer) does it: drop control characters and
/// U+FFFD, map whitespace (Zs, Zl, Zp, tab, newline) to spaces, surround CJK ideographs with spaces, optionally lower-case and strip accents
/// (NFD, remove Mn), and split on punctuation (ASCII punctuation ranges plus Unicode P*). Microsoft.ML.Tokenizers'
/// BertTokenizer differs on some inputs (for example it drops "½"), so normalization and pre-tokenization are ours
/// and only the WordPiece step uses the library.
/// </summary>
internal static class BertPreTokenizer
{
    public static List<string> Split(string text, bool lowerCase) => [.. Words(text, lowerCase)];

    /// <summary>
    /// <see cref="Split"/>'s words one at a time, as they are reached: a caller that needs only the first words of a long
    /// text (a tokenizer that truncates) stops reading there. Splitting a 4 MB text whole took about 2 s and 480 MB for a
    /// vector that reads its first 254 tokens.
    /// </summary>
    public static IEnumerable<string> Words(string text, bool lowerCase)
    {
        // The reference maps whitespace to spaces, surrounds CJK ideographs with spaces and splits on spaces: the same as
        // ending a word at each whitespace and making each ideograph a word of its own.
        var raw = new StringBuilder();
        foreach (var rune in text.EnumerateRunes())
        {
            if (IsDropped(rune)) continue;
            bool cjk = IsCjk(rune.Value);
            if (!cjk && !IsWhitespace(rune))
            {
                raw.Append(rune.ToString());
                continue;
            }
            if (raw.Length > 0)
            {
                foreach (var word in PunctuationSplit(raw.ToString(), lowerCase)) yield return word;
                raw.Clear();
            }
            if (cjk)
                foreach (var word in PunctuationSplit(rune.ToString(), lowerCase)) yield return word;
        }
        if (raw.Length > 0)
            foreach (var word in PunctuationSplit(raw.ToString(), lowerCase)) yield return word;
    }

    /// <summary>One space-free piece of text, lower-cased and accent-stripped when asked, split at each punctuation character.</summary>
    private static IEnumerable<string> PunctuationSplit(string raw, bool lowerCase)
    {
        var token = lowerCase ? StripAccents(ToLower(raw)) : raw;
        var current = new StringBuilder();
        foreach (var rune in token.EnumerateRunes())
        {
            if (IsPunctuation(rune))
            {
                if (current.Length > 0) { yield return current.ToString(); current.Clear(); }
                yield return rune.ToString();
            }
            else current.Append(rune.ToString());
        }
        if (current.Length > 0) yield return current.ToString();
    }

    /// <summary>
    /// Whitespace as the reference tokenizers take it: tab, newline, carriage return and the space separators (Zs), and
    /// also U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR (Zl, Zp), which the fast tokenizer maps to a space
    /// (Rust <c>char::is_whitespace</c>) and the slow one splits on (<c>str.split()</c>). The other White_Space characters
    /// (U+000B, U+000C, U+0085, U+001C–U+001F) are controls, dropped before this test.
    /// </summary>
    private static bool IsWhitespace(Rune r)
        => r.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(r) is UnicodeCategory.SpaceSeparator
            or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;

    /// <summary>
    /// Whether <paramref name="text"/> holds a character that makes a word: one that is neither dropped nor whitespace
    /// nor a nonspacing mark (Mn). A mark alone is no word: lower-casing strips every one (a text of only U+0301 encodes
    /// as an empty one), and a cased tokenizer reads it as [UNK] at best.
    /// </summary>
    public static bool HasWordCharacter(string text)
    {
        foreach (var rune in text.EnumerateRunes())
            if (!IsDropped(rune) && !IsWhitespace(rune) && Rune.GetUnicodeCategory(rune) != UnicodeCategory.NonSpacingMark) return true;
        return false;
    }

    private static bool IsDropped(Rune r) => r.Value is 0 or 0xFFFD || IsControl(r);

    private static bool IsControl(Rune r)
    {
        if (r.Value is '\t' or '\n' or '\r') return false;
        var c = Rune.GetUnicodeCategory(r);
        return c is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.PrivateUse or UnicodeCategory.Surrogate or UnicodeCategory.OtherNotAssigned;
    }

    private static bool IsPunctuation(Rune r)
    {
        int cp = r.Value;
        if (cp is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126) return true;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
    }

    private static bool IsCjk(int cp) => cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF
        or >= 0x2A700 and <= 0x2B73F or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF
        or >= 0x2F800 and <= 0x2FA1F;

    /// <summary>
    /// Full Unicode lower case, as the reference does it (Python <c>str.lower</c>, Rust <c>char::to_lowercase</c>).
    /// .NET's <c>ToLowerInvariant</c> is the simple 1:1 mapping; the only character whose full mapping differs from it
    /// (SpecialCasing.txt, unconditional) is U+0130 'İ' → "i" + U+0307, which .NET leaves upper case, so "İstanbul"
    /// would become [UNK]. After accent stripping it is plain "i".
    /// </summary>
    private static string ToLower(string text) => text.Replace("\u0130", "i\u0307", StringComparison.Ordinal).ToLowerInvariant();

    private static string StripAccents(string text)
    {
        var decomposed = text.Normalize(NormalizationForm.FormD);
        var sb = new StringBuilder(decomposed.Length);
        // By code point: a mark outside the BMP (U+E0100, U+1D167) is two UTF-16 units, each of category Surrogate.
        // Kept runes are copied through a stack buffer: this runs for every word of every text.
        Span<char> units = stackalloc char[2];
        foreach (var rune in decomposed.EnumerateRunes())
            if (Rune.GetUnicodeCategory(rune) != UnicodeCategory.NonSpacingMark) sb.Append(units[..rune.EncodeToUtf16(units)]);
        return sb.ToString();
    }
}
