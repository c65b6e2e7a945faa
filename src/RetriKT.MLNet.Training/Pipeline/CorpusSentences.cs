using System.Text.RegularExpressions;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Pipeline;

/// <summary>
/// Sentences drawn from unlabelled in-domain text (<see cref="RetriKTPipelineOptions.TuningCorpus"/>,
/// <see cref="RetriKTPipelineOptions.StoreCorpus"/>): a UTF-8 .txt file or a
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
        var candidates = Candidates(path, option).Select(c => c.Sentence).ToList();
        if (candidates.Count < count)
            throw new InvalidDataException($"{option} '{path}': {candidates.Count} distinct sentences of {MinWords}-{MaxWords} words, expected at least {option}Rows = {count}.");
        // The tuning draw keeps the salt it was measured with.
        return Shuffled(candidates, count, SeedMixer.Random(seed, option == TuningOption ? "tuning-corpus" : "store-corpus"));
    }

    /// <summary>
    /// <paramref name="count"/> sentences for a store and <paramref name="tuningCount"/> to tune on, from disjoint documents
    /// of <paramref name="path"/>: whole documents (lines, in a seeded order) go to the tuning side until it holds enough
    /// candidates, and each side is then drawn as <see cref="Draw"/> draws. Sentences of one review share its names and its
    /// sentiment; a tuning sentence whose siblings are in the store would reward retrieval for finding them, which the
    /// inputs a model serves do not offer. Fails as <see cref="Draw"/> does when either side is short.
    /// </summary>
    public static (List<string> Store, List<string> Tuning) DrawWithTuningDocuments(string path, int count, int tuningCount, int seed)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), $"{StoreOption}Rows must be >= 1, found {count}.");
        if (tuningCount < 1) throw new ArgumentOutOfRangeException(nameof(tuningCount), $"{StoreOption}TuningRows must be >= 1, found {tuningCount}.");
        var candidates = Candidates(path, StoreOption);
        var documents = candidates.Select(c => c.Document).Distinct().ToList();
        var order = SeedMixer.Random(seed, "store-corpus-documents");
        for (int i = documents.Count - 1; i > 0; i--)
        {
            int j = order.Next(i + 1);
            (documents[i], documents[j]) = (documents[j], documents[i]);
        }
        var perDocument = candidates.GroupBy(c => c.Document).ToDictionary(g => g.Key, g => g.Count());
        var tuningDocuments = new HashSet<int>();
        int held = 0;
        foreach (int d in documents)
        {
            if (held >= tuningCount) break;
            tuningDocuments.Add(d);
            held += perDocument[d];
        }
        var store = candidates.Where(c => !tuningDocuments.Contains(c.Document)).Select(c => c.Sentence).ToList();
        var tuning = candidates.Where(c => tuningDocuments.Contains(c.Document)).Select(c => c.Sentence).ToList();
        if (tuning.Count < tuningCount || store.Count < count)
            throw new InvalidDataException($"{StoreOption} '{path}': {candidates.Count} distinct sentences of {MinWords}-{MaxWords} words in {documents.Count} documents; " +
                                           $"{tuning.Count} for tuning and {store.Count} for the store, expected {StoreOption}TuningRows = {tuningCount} and {StoreOption}Rows = {count}.");
        return (Shuffled(store, count, SeedMixer.Random(seed, "store-corpus")), Shuffled(tuning, tuningCount, SeedMixer.Random(seed, "store-corpus-tuning")));
    }

    /// <summary>
    /// Fails with one line naming <paramref name="option"/>, <paramref name="path"/> and the first such sentence when any of
    /// <paramref name="drawn"/> is a sentence of <paramref name="test"/> (a task's test rows, cut into sentences as a corpus
    /// line is). Compared lower-cased on their letters and digits alone, so a tokenized test row ("it 's a charming film .")
    /// matches the plain sentence ("It's a charming film."). A test sentence in the store or the tuning rows, labelled by
    /// the teacher, would be retrieved for its test row at similarity 1: an accuracy that reads as held out and is not.
    /// </summary>
    internal static void RequireApartFromTest(IReadOnlyList<string> drawn, IEnumerable<string> test, string taskName, string path, string option)
    {
        var testSentences = new HashSet<string>(StringComparer.Ordinal);
        foreach (var row in test)
        {
            testSentences.Add(Normalized(row));
            foreach (var piece in SentenceEnd().Split(row)) testSentences.Add(Normalized(piece));
        }
        testSentences.Remove("");
        var shared = drawn.Where(d => testSentences.Contains(Normalized(d))).ToList();
        if (shared.Count > 0)
            throw new InvalidDataException($"{option} '{path}': {shared.Count} of the {drawn.Count} sentences drawn are in the test split of task {taskName} " +
                                           $"(the first: '{(shared[0].Length <= 80 ? shared[0] : shared[0][..77] + "...")}'); the text must not hold the task's test split.");
    }

    /// <summary>Lower-cased letters and digits, each run a word, words joined by one space.</summary>
    private static string Normalized(string text) => string.Join(' ', Words().Matches(text.ToLowerInvariant()).Select(m => m.Value));

    /// <summary>
    /// Fails with one line naming <paramref name="option"/> when <paramref name="path"/> is neither a file nor a folder:
    /// the check a draw starts with, which <see cref="RetriKTPipelineOptions.Validate"/> runs when the pipeline is built.
    /// </summary>
    internal static void RequireExists(string path, string option)
    {
        if (!Directory.Exists(path) && !File.Exists(path))
            throw new FileNotFoundException($"{option} '{path}' is neither a file nor a folder.", path);
    }

    /// <summary>The distinct candidate sentences of a corpus in file and line order, each with its document (line) number.</summary>
    private static List<(string Sentence, int Document)> Candidates(string path, string option)
    {
        RequireExists(path, option);
        var files = Directory.Exists(path) ? Directory.GetFiles(path, "*.txt").Order(StringComparer.Ordinal).ToArray() : [path];
        if (files.Length == 0) throw new InvalidDataException($"{option} '{path}' holds no .txt file.");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var candidates = new List<(string, int)>();
        int document = 0;
        foreach (var file in files)
            foreach (var line in Utf8TextFile.ReadLines(file, option))
            {
                foreach (var piece in SentenceEnd().Split(line))
                {
                    var sentence = piece.Trim();
                    int words = sentence.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
                    if (words is >= MinWords and <= MaxWords && seen.Add(sentence)) candidates.Add((sentence, document));
                }
                document++;
            }
        return candidates;
    }

    /// <summary>A uniform draw of <paramref name="count"/> without repeats: a partial Fisher-Yates shuffle, the first places.</summary>
    private static List<string> Shuffled(List<string> candidates, int count, Random rng)
    {
        for (int i = 0; i < count; i++)
        {
            int j = i + rng.Next(candidates.Count - i);
            (candidates[i], candidates[j]) = (candidates[j], candidates[i]);
        }
        return candidates.GetRange(0, count);
    }

    [GeneratedRegex(@"[\p{L}\p{Nd}]+")]
    private static partial Regex Words();

    // After the end mark: a space (the mark stays with its sentence).
    [GeneratedRegex(@"(?<=[.!?])\s+")]
    private static partial Regex SentenceEnd();
}
