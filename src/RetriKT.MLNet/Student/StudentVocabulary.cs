using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Student;

/// <summary>Vocabulary choices for a from-scratch student.</summary>
internal static class StudentVocabulary
{
    /// <summary>
    /// With <paramref name="characterPieces"/>: <see cref="WordPieceVocabulary.Build"/> (characters + whole words).
    /// Without: special tokens + whole words (single-character words such as "a" and punctuation included) by
    /// frequency, so a word never seen in training is [UNK]. Deterministic (ties by ordinal order).
    /// </summary>
    public static WordPieceVocabulary Build(IEnumerable<string> texts, int maxSize, int minFrequency, bool lowerCase, bool characterPieces)
    {
        if (characterPieces) return WordPieceVocabulary.Build(texts, maxSize, minFrequency, lowerCase);
        if (maxSize < WordPieceVocabulary.MinimumBuildSize)
            throw new ArgumentOutOfRangeException(nameof(maxSize), $"maxSize must be at least {WordPieceVocabulary.MinimumBuildSize}, found {maxSize}.");
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var text in texts)
            foreach (var word in BertPreTokenizer.Split(text, lowerCase))
                counts[word] = counts.GetValueOrDefault(word) + 1;
        var tokens = new List<string>(WordPieceVocabulary.SpecialTokens);
        var present = new HashSet<string>(tokens, StringComparer.Ordinal);
        foreach (var (word, _) in counts.Where(w => w.Value >= minFrequency)
                     .OrderByDescending(w => w.Value).ThenBy(w => w.Key, StringComparer.Ordinal))
        {
            if (tokens.Count >= maxSize) break;
            if (!word.StartsWith("##", StringComparison.Ordinal) && present.Add(word)) tokens.Add(word);
        }
        return WordPieceVocabulary.FromTokens(tokens, lowerCase, "student word vocabulary");
    }
}
