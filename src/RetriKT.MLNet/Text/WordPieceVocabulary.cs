using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Text;

/// <summary>
/// A WordPiece vocabulary (one token per line, BERT layout: [PAD], [UNK], [CLS], [SEP], [MASK] present) and the
/// Microsoft.ML.Tokenizers <see cref="BertTokenizer"/> built from it. Loadable from a vocab.txt, or built from a
/// corpus (whole words by frequency plus every character as a word-initial and a "##" continuation piece, so no
/// in-alphabet text maps to [UNK]).
/// </summary>
public sealed class WordPieceVocabulary
{
    /// <summary>Special tokens every vocabulary must hold.</summary>
    public static readonly IReadOnlyList<string> SpecialTokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

    private WordPieceVocabulary(IReadOnlyList<string> tokens, bool lowerCase, string source)
    {
        Tokens = tokens;
        LowerCase = lowerCase;
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++)
        {
            if (tokens[i].Length == 0) throw new InvalidDataException($"{source}: line {i + 1} is empty; a vocabulary has one token per line.");
            if (!seen.TryAdd(tokens[i], i)) throw new InvalidDataException($"{source}: token '{tokens[i]}' appears twice (lines {seen[tokens[i]] + 1} and {i + 1}).");
        }
        foreach (var special in SpecialTokens)
            if (!seen.ContainsKey(special)) throw new InvalidDataException($"{source}: special token '{special}' is missing.");
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', tokens) + "\n"));
        Tokenizer = WordPieceTokenizer.Create(stream, new WordPieceOptions { UnknownToken = "[UNK]", ContinuingSubwordPrefix = "##", MaxInputCharsPerWord = 100 });
        PadId = seen["[PAD]"];
        UnknownId = seen["[UNK]"];
        ClsId = seen["[CLS]"];
        SepId = seen["[SEP]"];
        MaskId = seen["[MASK]"];
    }

    /// <summary>Id of [PAD].</summary>
    public int PadId { get; }
    /// <summary>Id of [UNK].</summary>
    public int UnknownId { get; }
    /// <summary>Id of [CLS].</summary>
    public int ClsId { get; }
    /// <summary>Id of [SEP].</summary>
    public int SepId { get; }
    /// <summary>Id of [MASK].</summary>
    public int MaskId { get; }

    /// <summary>
    /// Where the second text starts in token ids laid out as <c>[CLS] a [SEP] b [SEP]</c>: just after the first [SEP],
    /// or <c>ids.Length</c> when nothing follows it (a single text). Tokens from there on are segment (token type) 1, in
    /// the tiny student and in a pretrained BERT alike. Typed text never yields the [SEP] id (the pre-tokenizer splits
    /// "[SEP]" into punctuation and a word), so the first [SEP] is the one between the texts.
    /// </summary>
    internal static int SecondTextStart(ReadOnlySpan<int> ids, int sepId)
    {
        int first = ids.IndexOf(sepId);
        return first >= 0 && first < ids.Length - 1 ? first + 1 : ids.Length;
    }

    /// <summary>
    /// WordPiece ids of <paramref name="text"/> without special tokens, as BERT's reference tokenizer produces them
    /// (BERT basic tokenization, then greedy longest-match WordPiece through Microsoft.ML.Tokenizers).
    /// </summary>
    public List<int> Encode(string text) => Encode(text, int.MaxValue);

    /// <summary>
    /// The first <paramref name="maxTokens"/> ids of <see cref="Encode(string)"/>, reading no further into the text than
    /// they need: what a truncating tokenizer keeps of a long text costs what it keeps, not the text's length.
    /// </summary>
    internal List<int> Encode(string text, int maxTokens)
    {
        var ids = new List<int>();
        foreach (var word in BertPreTokenizer.Words(text, LowerCase))
        {
            if (ids.Count >= maxTokens) break;
            ids.AddRange(Tokenizer.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
        }
        if (ids.Count > maxTokens) ids.RemoveRange(maxTokens, ids.Count - maxTokens);
        return ids;
    }

    /// <summary>
    /// Whether <paramref name="text"/> encodes to more ids than <paramref name="other"/> (<see cref="Encode(string)"/>),
    /// reading each only until the shorter one ends: which of two long texts is the longer costs the shorter's length.
    /// </summary>
    internal bool HasMoreTokens(string text, string other)
    {
        using var wordsOfText = BertPreTokenizer.Words(text, LowerCase).GetEnumerator();
        using var wordsOfOther = BertPreTokenizer.Words(other, LowerCase).GetEnumerator();
        long countText = 0, countOther = 0;
        while (true)
        {
            // Read on in the one behind: a text that ends behind or level with the other is not the longer.
            if (countText <= countOther)
            {
                if (!wordsOfText.MoveNext()) return false;
                countText += Tokenizer.CountTokens(wordsOfText.Current, considerPreTokenization: false, considerNormalization: false);
            }
            else
            {
                if (!wordsOfOther.MoveNext()) return true;
                countOther += Tokenizer.CountTokens(wordsOfOther.Current, considerPreTokenization: false, considerNormalization: false);
            }
        }
    }

    /// <summary>Tokens in id order.</summary>
    public IReadOnlyList<string> Tokens { get; }

    /// <summary>Whether text is lower-cased (and accents stripped) before tokenization.</summary>
    public bool LowerCase { get; }

    /// <summary>The WordPiece step over this vocabulary (Microsoft.ML.Tokenizers; thread-safe for encoding).</summary>
    public WordPieceTokenizer Tokenizer { get; }

    /// <summary>Number of tokens.</summary>
    public int Count => Tokens.Count;

    /// <summary>
    /// Loads a vocab.txt (UTF-8, one token per line). A byte that is not UTF-8 (a file saved as Latin-1) fails with an
    /// <see cref="InvalidDataException"/> naming the file, line and byte, instead of becoming a U+FFFD token.
    /// </summary>
    public static WordPieceVocabulary Load(string path, bool lowerCase = true)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"WordPiece vocabulary file not found: '{path}'.", path);
        var lines = Utf8TextFile.ReadAllLines(path);
        int count = lines.Length;
        while (count > 0 && lines[count - 1].Length == 0) count--; // a trailing newline is not a token
        return new WordPieceVocabulary(lines.Take(count).ToArray(), lowerCase, path);
    }

    /// <summary>
    /// Whether <paramref name="tokens"/> come from a lower-cased (uncased) model: fewer than 1 % of them, bracketed
    /// specials aside, hold a letter that lower-casing changes. An uncased model's vocabulary was built from lower-cased
    /// text, so it holds none (all-MiniLM-L6-v2, arctic-embed-xs, bert-base-uncased: 0 of 30,522); a cased one holds
    /// thousands ("The", "Paris"), and lower-casing its input would send every such word to other pieces, silently.
    /// </summary>
    public static bool LooksUncased(IReadOnlyList<string> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        int words = 0, cased = 0;
        foreach (var token in tokens)
        {
            if (token.Length > 1 && token[0] == '[' && token[^1] == ']') continue; // [CLS], [unused0], …
            words++;
            if (!string.Equals(token, token.ToLowerInvariant(), StringComparison.Ordinal)) cased++;
        }
        return cased * 100 < words;
    }

    /// <summary>Creates a vocabulary from tokens in id order (validated).</summary>
    public static WordPieceVocabulary FromTokens(IReadOnlyList<string> tokens, bool lowerCase, string source = "vocabulary")
        => new(tokens, lowerCase, source);

    /// <summary>Writes the tokens as a model.zip part holds them: the count, then each token (what <see cref="ReadTokens"/> reads).</summary>
    internal void WriteTokens(BinaryWriter writer)
    {
        writer.Write(Count);
        foreach (var token in Tokens) writer.Write(token);
    }

    /// <summary>
    /// Reads what <see cref="WriteTokens"/> wrote. <paramref name="expectedCount"/>, when given, is the count the model's
    /// embeddings need; otherwise the count must lie between the special tokens' and ten million. Errors name <paramref name="source"/>.
    /// </summary>
    internal static string[] ReadTokens(BinaryReader reader, string source, int? expectedCount = null)
    {
        int count = reader.ReadInt32();
        if (expectedCount is int expected && count != expected)
            throw new InvalidDataException($"{source}: vocabulary holds {count} tokens, the encoder expects {expected}.");
        if (count < SpecialTokens.Count || count > 10_000_000)
            throw new InvalidDataException($"{source}: token count {count} is out of range [{SpecialTokens.Count}, 10000000].");
        var tokens = new string[count];
        for (int i = 0; i < count; i++) tokens[i] = reader.ReadString();
        return tokens;
    }

    /// <summary>The smallest vocabulary <see cref="Build"/> makes: the special tokens and two word pieces.</summary>
    internal static int MinimumBuildSize => SpecialTokens.Count + 2;

    /// <summary>
    /// Builds a vocabulary from <paramref name="texts"/>: special tokens, then every character seen (as itself and
    /// as "##c"), then whole words with at least <paramref name="minFrequency"/> occurrences, most frequent first,
    /// up to <paramref name="maxSize"/> tokens in all. Deterministic: ties break by ordinal order.
    /// </summary>
    public static WordPieceVocabulary Build(IEnumerable<string> texts, int maxSize = 8000, int minFrequency = 2, bool lowerCase = true)
    {
        if (maxSize < MinimumBuildSize)
            throw new ArgumentOutOfRangeException(nameof(maxSize), $"maxSize must be at least {MinimumBuildSize}, found {maxSize}.");
        var words = new Dictionary<string, int>(StringComparer.Ordinal);
        var chars = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var text in texts)
            foreach (var word in BertPreTokenizer.Split(text, lowerCase))
            {
                words[word] = words.GetValueOrDefault(word) + 1;
                var e = StringInfo.GetTextElementEnumerator(word);
                while (e.MoveNext()) chars.Add(e.GetTextElement());
            }
        var tokens = new List<string>(SpecialTokens);
        var present = new HashSet<string>(tokens, StringComparer.Ordinal);
        foreach (var c in chars) if (tokens.Count < maxSize && present.Add(c)) tokens.Add(c);
        foreach (var c in chars) if (tokens.Count < maxSize && present.Add("##" + c)) tokens.Add("##" + c);
        foreach (var (word, _) in words.Where(w => w.Value >= minFrequency && w.Key.Length > 1)
                     .OrderByDescending(w => w.Value).ThenBy(w => w.Key, StringComparer.Ordinal))
        {
            if (tokens.Count >= maxSize) break;
            if (present.Add(word)) tokens.Add(word);
        }
        return new WordPieceVocabulary(tokens, lowerCase, "built vocabulary");
    }
}
