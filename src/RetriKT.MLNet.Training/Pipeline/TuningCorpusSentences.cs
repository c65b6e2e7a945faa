using System.Text.RegularExpressions;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Pipeline;

/// <summary>
/// Sentences drawn from unlabelled in-domain text (<see cref="RetriKTPipelineOptions.TuningCorpus"/>): a .txt file or a
/// folder of them (in name order), one document per line, cut into sentences at ., ! or ? followed by a space, of which
/// those with <see cref="MinWords"/> to <see cref="MaxWords"/> words are candidates; a seeded draw without repeats
/// picks the rows. The same path, count and seed give the same sentences on every machine.
/// </summary>
public static partial class TuningCorpusSentences
{
    /// <summary>Shortest sentence drawn, in words (shorter ones are mostly fragments and headings).</summary>
    public const int MinWords = 5;
    /// <summary>Longest sentence drawn, in words (a task's single-sentence inputs are rarely longer).</summary>
    public const int MaxWords = 40;

    /// <summary>
    /// <paramref name="count"/> distinct sentences of <paramref name="path"/>, drawn by <paramref name="seed"/>. Fails with
    /// one line naming the path when it is missing, holds no .txt file, or has fewer candidate sentences than asked for.
    /// </summary>
    public static List<string> Draw(string path, int count, int seed)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), $"TuningCorpusRows must be >= 1, found {count}.");
        var files = Directory.Exists(path) ? Directory.GetFiles(path, "*.txt").Order(StringComparer.Ordinal).ToArray()
            : File.Exists(path) ? [path]
            : throw new FileNotFoundException($"TuningCorpus '{path}' is neither a file nor a folder.", path);
        if (files.Length == 0) throw new InvalidDataException($"TuningCorpus '{path}' holds no .txt file.");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var candidates = new List<string>();
        foreach (var file in files)
            foreach (var line in File.ReadLines(file))
                foreach (var piece in SentenceEnd().Split(line))
                {
                    var sentence = piece.Trim();
                    int words = sentence.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
                    if (words is >= MinWords and <= MaxWords && seen.Add(sentence)) candidates.Add(sentence);
                }
        if (candidates.Count < count)
            throw new InvalidDataException($"TuningCorpus '{path}': {candidates.Count} distinct sentences of {MinWords}-{MaxWords} words, expected at least TuningCorpusRows = {count}.");
        var rng = SeedMixer.Random(seed, "tuning-corpus");
        // A partial Fisher-Yates shuffle: the first count places are a uniform draw without repeats.
        for (int i = 0; i < count; i++)
        {
            int j = i + rng.Next(candidates.Count - i);
            (candidates[i], candidates[j]) = (candidates[j], candidates[i]);
        }
        return candidates.GetRange(0, count);
    }

    // After the end mark: a space (the mark stays with its sentence).
    [GeneratedRegex(@"(?<=[.!?])\s+")]
    private static partial Regex SentenceEnd();
}
