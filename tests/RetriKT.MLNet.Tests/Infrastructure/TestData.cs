using Microsoft.ML;

namespace RetriKT.MLNet.Tests.Infrastructure;

public sealed class TextRow
{
    public string Text { get; set; } = "";
    public string Label { get; set; } = "";
}

/// <summary>Readers for the shared benchmark files used by tests.</summary>
public static class TestData
{
    /// <summary>An LM-BFF k-shot split of a GLUE single-sentence task (tab-separated, header row "sentence	label").</summary>
    public static List<TextRow> ReadSingleSentenceTsv(string path)
    {
        var lines = File.ReadAllLines(path);
        var header = lines[0].Split('\t');
        int text = Array.IndexOf(header, "sentence"), label = Array.IndexOf(header, "label");
        if (text < 0 || label < 0) throw new InvalidDataException($"{path}: expected columns 'sentence' and 'label', found {lines[0]}");
        return lines.Skip(1).Where(l => l.Length > 0).Select(l => l.Split('\t'))
            .Select(f => new TextRow { Text = f[text], Label = f[label] }).ToList();
    }

    public static IDataView Sst2Train(MLContext mlContext, int seed = 13)
        => mlContext.Data.LoadFromEnumerable(ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", $"16-{seed}", "train.tsv")));
}
