using System.Text.RegularExpressions;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Pipeline;

/// <summary>
/// Sentences drawn from unlabelled in-domain text (<see cref="RetriKTPipelineOptions.TuningCorpus"/>,
/// <see cref="RetriKTPipelineOptions.StoreCorpus"/>): a .txt file or a
/// folder of them (in name order), one document per line, cut into sentences at ., ! or ? followed by a space, of which
/// those with <see cref="MinWords"/> to <see cref="MaxWords"/> words are candidates; a seeded draw without repeats
/// picks the rows. The same path, count and seed give the same sentences on every machine.
/// </summary>
public static partial class CorpusSentences
{
    /// <summary>Shortest sentence drawn, in words (shorter ones are mostly fragments and headings).</summary>
    public const int MinWords = 5;
    /// <summary>The option name of a tuning draw (<see cref="RetriKTPipelineOptions.TuningCorpus"/>).</summary>
    public const string TuningOption = nameof(RetriKTPipelineOptions.TuningCorpus);
    /// <summary>The option name of a store draw (<see cref="RetriKTPipelineOptions.StoreCorpus"/>).</summary>
    public const string StoreOption = nameof(RetriKTPipelineOptions.StoreCorpus);
    /// <summary>Longest sentence drawn, in words (a task's single-sentence inputs are rarely longer).</summary>
    public const int MaxWords = 40;

    /// <summary>
    /// <paramref name="count"/> distinct sentences of <paramref name="path"/>, drawn by <paramref name="seed"/>. Fails with
    /// one line naming the option and the path when it is missing, holds no .txt file, or has fewer candidate sentences
    /// than asked for. <paramref name="option"/> names the pipeline option the path came from (in messages) and seeds the
    /// draw, so a tuning draw and a store draw of one corpus differ.
    /// </summary>
    public static List<string> Draw(string path, int count, int seed, string option = TuningOption)
    {
        if (option is not (TuningOption or StoreOption)) throw new ArgumentOutOfRangeException(nameof(option), $"option must be {TuningOption} or {StoreOption}, found '{option}'.");
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), $"{option}Rows must be >= 1, found {count}.");
        var files = Directory.Exists(path) ? Directory.GetFiles(path, "*.txt").Order(StringComparer.Ordinal).ToArray()
            : File.Exists(path) ? [path]
            : throw new FileNotFoundException($"{option} '{path}' is neither a file nor a folder.", path);
        if (files.Length == 0) throw new InvalidDataException($"{option} '{path}' holds no .txt file.");
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
            throw new InvalidDataException($"{option} '{path}': {candidates.Count} distinct sentences of {MinWords}-{MaxWords} words, expected at least {option}Rows = {count}.");
        // The tuning draw keeps the salt it was measured with.
        var rng = SeedMixer.Random(seed, option == TuningOption ? "tuning-corpus" : "store-corpus");
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
