using TorchSharp;
using RetriKT.MLNet.Text;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>Token ids of a batch, padded: ids, segment ids and the padding mask as tensors (training side).</summary>
internal static class TokenBatch
{
    public static (Tensor Ids, Tensor Segments, Tensor Mask) Collate(IReadOnlyList<int[]> rows, int sepId, Device device)
    {
        int b = rows.Count, t = Math.Max(1, rows.Max(r => r.Length));
        var ids = new long[b * t];
        var segments = new long[b * t];
        var mask = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            var row = rows[i];
            int second = WordPieceVocabulary.SecondTextStart(row, sepId); // tokens after the first [SEP] belong to the second text
            for (int j = 0; j < row.Length; j++)
            {
                ids[i * t + j] = row[j];
                segments[i * t + j] = j < second ? 0 : 1;
                mask[i * t + j] = 1;
            }
        }
        return (torch.tensor(ids, [b, t], device: device), torch.tensor(segments, [b, t], device: device),
            torch.tensor(mask, [b, t], device: device));
    }
}
